/* Semihosting: output and exit through the debugger (QEMU -semihosting-config enable=on). */
#ifndef SEMIHOSTING_H
#define SEMIHOSTING_H

#define SYS_OPEN 0x01
#define SYS_WRITE 0x05
#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define ADP_STOPPED_RUNTIME_ERROR 0x20023

int semihosting_call(int op, const void *arg);
/* Writes a NUL-terminated string to the host's stdout. */
void semihosting_puts(const char *s);
/* Ends the run: QEMU exits with 0 when code is 0, else 1. */
void semihosting_exit(int code) __attribute__((noreturn));

/* Marks the free RAM below the stack, so that stack_used can find how deep the stack went. */
void paint_stack(void);
/* Bytes of stack used since paint_stack: from the top of RAM to the lowest overwritten mark. */
unsigned stack_used(void);

#endif /* SEMIHOSTING_H */
