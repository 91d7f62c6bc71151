/* Reset handler, vector table and semihosting for QEMU mps2-an386 (Cortex-M4F). */
#include <stdint.h>

#include "semihosting.h"

extern uint32_t __data_start[], __data_end[], __data_load[], __bss_start[], __bss_end[];
extern uint32_t __stack_top[];
int main(void);

int semihosting_call(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* The host's stdout: ":tt" opened for writing. SYS_WRITE0 would go to QEMU's semihosting
   console instead, which is not its stdout under -nographic. */
static int stdout_handle = -1;

void semihosting_puts(const char *s) {
    if (stdout_handle < 0) {
        const uint32_t open_args[3] = {(uint32_t)(uintptr_t)":tt", 4 /* "w" */, 3};
        stdout_handle = semihosting_call(SYS_OPEN, open_args);
    }
    uint32_t len = 0;
    while (s[len])
        len++;
    const uint32_t write_args[3] = {(uint32_t)stdout_handle, (uint32_t)(uintptr_t)s, len};
    semihosting_call(SYS_WRITE, write_args);
}

void semihosting_exit(int code) {
    /* 32-bit ARM: the reason code itself is the argument; QEMU exits 0 for ApplicationExit,
       1 for anything else. */
    semihosting_call(SYS_EXIT, (const void *)(uintptr_t)(code == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                                   : ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
    }
}

/* Free RAM: from `end` (after .bss) to the stack. */
extern uint32_t end[];
#define PAINT 0x5AA5F00Du

void paint_stack(void) {
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    /* Leave 64 bytes below this frame alone. */
    for (volatile uint32_t *p = end; p + 16 < sp; p++)
        *p = PAINT;
}

unsigned stack_used(void) {
    volatile uint32_t *p = end;
    while (p < __stack_top && *p == PAINT)
        p++;
    return (unsigned)((uintptr_t)__stack_top - (uintptr_t)p);
}

void Reset_Handler(void) {
    /* Full access to CP10/CP11 (the FPU) before any float instruction runs. */
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (uint32_t *src = __data_load, *dst = __data_start; dst < __data_end;)
        *dst++ = *src++;
    for (uint32_t *dst = __bss_start; dst < __bss_end;)
        *dst++ = 0;
    semihosting_exit(main());
}

/* A fault (a trap in the library included) must end the QEMU run, never hang it. */
static void Fault_Handler(void) {
    semihosting_puts("fault\nresult fail\n");
    semihosting_exit(1);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top,
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
};
