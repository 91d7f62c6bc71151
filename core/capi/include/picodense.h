/*
 * picodense.h - the C API of picodense-core (the staticlib libpicodense_capi.a).
 *
 * Checks a picodense model image (a .pdn file, e.g. the array of `picodense export --out
 * model.h`), reports the scratch its inference needs, and runs int8 or f32 inference into
 * buffers the caller owns. No heap, no globals, no I/O: safe to call from any thread on
 * different views, and the same image may be opened into many views.
 *
 * Typical use:
 *
 *     static picodense_view view;
 *     static uint32_t scratch[4096];
 *     picodense_info info;
 *     int32_t s = picodense_open(&view, picodense_model, picodense_model_len, &info);
 *     if (s != PICODENSE_OK) { puts(picodense_status_name(s)); ... }
 *     // info.scratch_words <= 4096 (648 for an int8 784-512-10 model)
 *     int32_t logits[10];
 *     uint32_t class;
 *     s = picodense_int8_predict(&view, pixels, 784, scratch, 4096, logits, 10, &class);
 *
 * Caller obligations (the functions cannot check them):
 *  - every pointer passed with a length is valid for reads (inputs) or writes (outputs) of that
 *    many elements, and no two buffers of one call overlap;
 *  - the model bytes given to picodense_open stay valid and unmodified as long as the view is
 *    used: the view reads the weights in place (from flash), it does not copy them;
 *  - a picodense_view is passed to the predict functions only after picodense_open returned
 *    PICODENSE_OK for it (a zeroed or refused view is detected: PICODENSE_ERR_NOT_OPEN), is not
 *    copied or changed by the caller, and is used by one call at a time.
 * What the functions do check: NULL pointers, the 4-byte alignment of word and float buffers,
 * and every length against the model; those return a status code, never crash.
 *
 * Build the library for a Cortex-M4F/M7 (hard float, as -mfloat-abi=hard -mfpu=fpv4-sp-d16):
 *     cargo build --release --target thumbv7em-none-eabihf --manifest-path core/capi/Cargo.toml
 * for a Cortex-M0/M0+ (no DSP instructions):
 *     cargo build --release --target thumbv6m-none-eabi --no-default-features \
 *         --manifest-path core/capi/Cargo.toml
 * and link core/capi/target/<target>/release/libpicodense_capi.a.
 */
#ifndef PICODENSE_H
#define PICODENSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: every function that can fail returns one. */
#define PICODENSE_OK 0
#define PICODENSE_ERR_NULL 1                  /* a required pointer was NULL */
#define PICODENSE_ERR_TRUNCATED 2             /* image shorter than a header or than it says */
#define PICODENSE_ERR_MAGIC 3                 /* not "PDN1": not a picodense model */
#define PICODENSE_ERR_VERSION 4               /* a format version this build does not read */
#define PICODENSE_ERR_DTYPE 5                 /* an unknown dtype byte */
#define PICODENSE_ERR_LENGTH 6                /* payload length disagrees with sizes/length */
#define PICODENSE_ERR_CRC 7                   /* CRC-32 mismatch: the image is corrupted */
#define PICODENSE_ERR_SHAPE 8                 /* layer sizes no network can have */
#define PICODENSE_ERR_WRONG_DTYPE 9           /* int8 call on an f32 model, or the reverse */
#define PICODENSE_ERR_ONE_HIDDEN_LAYER_ONLY 10 /* f32 inference: one hidden layer only */
#define PICODENSE_ERR_TOO_LARGE 11            /* sizes so large a length overflows */
#define PICODENSE_ERR_MISALIGNED 12           /* a word/float buffer not 4-byte aligned */
#define PICODENSE_ERR_NOT_OPEN 13             /* view not filled by a successful open */
#define PICODENSE_ERR_INPUT_LEN 14            /* input length differs from the model's */
#define PICODENSE_ERR_SCRATCH_LEN 15          /* scratch (f32: hidden) buffer too short */
#define PICODENSE_ERR_LOGITS_LEN 16           /* logits buffer shorter than the classes */
#define PICODENSE_ERR_OTHER 99                /* a model error this build has no code for */

/* picodense_info.dtype */
#define PICODENSE_DTYPE_F32 0
#define PICODENSE_DTYPE_INT8 1

/* Most layer widths of a model: inputs, up to four hidden layers, classes. */
#define PICODENSE_MAX_WIDTHS 6

/* Size of a picodense_view in 64-bit words (the view holds pointers). */
#if UINTPTR_MAX == 0xFFFFFFFFu
#define PICODENSE_VIEW_WORDS 64
#else
#define PICODENSE_VIEW_WORDS 128
#endif

/* What a model image holds and what running it takes. */
typedef struct picodense_info {
    uint32_t version;       /* format version of the file (1 or 2) */
    uint32_t dtype;         /* PICODENSE_DTYPE_F32 or PICODENSE_DTYPE_INT8 */
    uint32_t dataset;       /* 0 unknown, 1 MNIST, 2 Fashion-MNIST */
    uint32_t n_widths;      /* entries used in widths: inputs, hidden layers, classes (3-6) */
    uint32_t widths[PICODENSE_MAX_WIDTHS]; /* layer widths; unused entries zero */
    uint32_t inputs;        /* inputs (pixels) per inference */
    uint32_t classes;       /* logits each inference writes */
    uint32_t scratch_words; /* scratch elements: uint32_t words (int8), floats (f32 hidden) */
    uint32_t scratch_bytes; /* the same in bytes: 4 * scratch_words */
} picodense_info;

/* A checked model: opaque storage the caller owns (static, stack or heap), filled by
   picodense_open. 512 bytes on 32-bit targets. */
typedef struct picodense_view {
    uint64_t opaque[PICODENSE_VIEW_WORDS];
} picodense_view;

/*
 * Checks a model image: magic, format version, dtype, the sizes against the length, the
 * CRC-32, and that this API can run it (f32 models: one hidden layer). On PICODENSE_OK fills
 * *info when info is not NULL. Reads the whole image (the CRC), so call it once, not per
 * inference. model: model_len readable bytes, any alignment.
 */
int32_t picodense_check(const uint8_t *model, size_t model_len, picodense_info *info);

/*
 * Checks the image like picodense_check and, on PICODENSE_OK, stores its parsed form in *view
 * (and fills *info when not NULL). The view borrows the image: keep the image valid and
 * unmodified while the view is used. On an error the view is left closed. The image need not
 * be aligned, but int8 weights are read a word at a time and f32 weights as floats only when
 * it is 4-byte aligned (the exported header aligns it to 16); otherwise bytewise, same results.
 */
int32_t picodense_open(picodense_view *view, const uint8_t *model, size_t model_len,
                       picodense_info *info);

/* Scratch elements the view's inference needs (info.scratch_words); 0 when view is NULL or
   not open. */
size_t picodense_scratch_words(const picodense_view *view);

/*
 * Classifies one image with an int8 model: n_pixels must equal the model's inputs (u8
 * pixels, 0-255); scratch (4-byte aligned) holds at least picodense_scratch_words(view)
 * words; logits (4-byte aligned) at least the model's classes. Writes the int32 logits to
 * logits[0..classes-1] (one step = the model's logit scale) and the arg-max, the first on
 * ties, to *class_out. Integer arithmetic only: the same bits as picodense on any host.
 */
int32_t picodense_int8_predict(const picodense_view *view, const uint8_t *pixels,
                               size_t n_pixels, uint32_t *scratch, size_t scratch_words,
                               int32_t *logits, size_t n_logits, uint32_t *class_out);

/*
 * Classifies one input with an f32 model (one hidden layer): n_input must equal the model's
 * inputs (pixels as picodense_unit_pixel); hidden holds at least the hidden units (the f32
 * scratch, picodense_scratch_words(view) floats) and receives their activations; logits at
 * least the classes. All three 4-byte aligned. Writes the logits and the arg-max (first on
 * ties) to *class_out. Sums run over the inputs in order with separate multiply and add, so
 * any IEEE-754 single-precision target computes the same bits as picodense's F32View.
 */
int32_t picodense_f32_predict(const picodense_view *view, const float *input, size_t n_input,
                              float *hidden, size_t n_hidden, float *logits, size_t n_logits,
                              uint32_t *class_out);

/* The f32 input value of a pixel, p / 255.0f, computed exactly as picodense does. */
float picodense_unit_pixel(uint8_t p);

/* A static NUL-terminated English name of a status code ("ok", "CRC mismatch: ..."). */
const char *picodense_status_name(int32_t status);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PICODENSE_H */
