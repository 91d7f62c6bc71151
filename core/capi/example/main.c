/*
 * picodense C example: checks the embedded model through the C API, shows that damaged copies
 * are refused with the code naming what failed, then classifies every embedded image and
 * prints one line per image, the logits' exact bits in hex (int32 for int8 models, f32 bits
 * for f32 ones):
 *
 *     picodense C example: model 784-512-10 int8, 100 images, scratch 648 words
 *     img 0 class 9 label 9 logits fffcd04e fffb1ecf ...
 *     accuracy 79/100
 *     result pass
 *
 * model.h comes from `picodense export ... --out model.h`; images.h defines
 * PICODENSE_IMAGES_COUNT, picodense_images[][PICODENSE_MODEL_INPUTS] and picodense_labels[]
 * (tools/images-h.sh writes one from the Fashion-MNIST test set). Exit code (through
 * semihosting): 0 when the model was accepted, the damaged copies refused as expected and
 * every inference returned PICODENSE_OK; 1 otherwise.
 */
#include <stdint.h>
#include <string.h>

#include "images.h"
#include "model.h"
#include "picodense.h"
#include "semihosting.h"

/* Buffers sized for the largest model this example runs; checked against the model below
   (an int8 784-512-10 model needs 648 words: -DSCRATCH_WORDS=648 saves the rest). */
#ifndef SCRATCH_WORDS
#define SCRATCH_WORDS 4096
#endif
/* The damaged-copy demonstration keeps a RAM copy of the model; 0 leaves it out. */
#ifndef PICODENSE_DAMAGE_CHECKS
#define PICODENSE_DAMAGE_CHECKS 1
#endif

static picodense_view view;
/* int8 inference takes words of scratch, f32 inference the hidden layer's floats. */
static union {
    uint32_t words[SCRATCH_WORDS];
    float floats[SCRATCH_WORDS];
} scratch;
static float input[PICODENSE_MODEL_INPUTS];
static int32_t logits_q[PICODENSE_MODEL_CLASSES];
static float logits_f[PICODENSE_MODEL_CLASSES];
#if PICODENSE_DAMAGE_CHECKS
/* A RAM copy of the model to damage on purpose. */
static uint8_t damaged[PICODENSE_MODEL_LEN];
#endif

/* A line under construction: no printf, so nothing pulls in a heap. */
static char line[128 + 9 * PICODENSE_MODEL_CLASSES];
static size_t used;

static void put(const char *s) {
    while (*s && used + 2 < sizeof line)
        line[used++] = *s++;
}

static void put_u32(uint32_t v) {
    char digits[11];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && used + 2 < sizeof line)
        line[used++] = digits[--n];
}

static void put_hex(uint32_t v) {
    for (int shift = 28; shift >= 0; shift -= 4)
        if (used + 2 < sizeof line)
            line[used++] = "0123456789abcdef"[(v >> shift) & 0xF];
}

static void flush(void) {
    line[used++] = '\n';
    line[used] = '\0';
    semihosting_puts(line);
    used = 0;
}

#if PICODENSE_DAMAGE_CHECKS
/* Checks a damaged copy of the model and reports whether it got the expected status. */
static int refused(const char *what, size_t len, int32_t expected) {
    int32_t s = picodense_check(damaged, len, NULL);
    put("check ");
    put(what);
    put(": status ");
    put_u32((uint32_t)s);
    put(" (");
    put(picodense_status_name(s));
    put(s == expected ? ") as expected" : ") UNEXPECTED");
    flush();
    return s == expected;
}
#endif

int main(void) {
    paint_stack();
    int ok = 1;
    picodense_info info;
    int32_t s = picodense_open(&view, picodense_model, picodense_model_len, &info);
    if (s != PICODENSE_OK) {
        put("model refused: ");
        put(picodense_status_name(s));
        flush();
        return 1;
    }
    put("picodense C example: model ");
    for (uint32_t i = 0; i < info.n_widths; i++) {
        if (i)
            put("-");
        put_u32(info.widths[i]);
    }
    put(info.dtype == PICODENSE_DTYPE_INT8 ? " int8, " : " f32, ");
    put_u32(PICODENSE_IMAGES_COUNT);
    put(" images, scratch ");
    put_u32(info.scratch_words);
    put(" words");
    flush();
    if (info.scratch_words > SCRATCH_WORDS) {
        put("scratch too small: rebuild with -DSCRATCH_WORDS=");
        put_u32(info.scratch_words);
        flush();
        return 1;
    }

#if PICODENSE_DAMAGE_CHECKS
    /* Damaged copies: each refused with the code naming what failed. */
    /* Through a pointer the compiler cannot see through: copying straight from the constant
       array, GCC 12 puts a second copy of the model in flash to copy from. */
    const uint8_t *volatile model = picodense_model;
    memcpy(damaged, model, sizeof damaged);
    damaged[sizeof damaged / 2] ^= 0x01;
    ok &= refused("one flipped bit", sizeof damaged, PICODENSE_ERR_CRC);
    damaged[sizeof damaged / 2] ^= 0x01;
    ok &= refused("truncated", sizeof damaged - 4, PICODENSE_ERR_TRUNCATED);
    damaged[0] = 'X';
    ok &= refused("bad magic", sizeof damaged, PICODENSE_ERR_MAGIC);
    damaged[0] = model[0];
    ok &= refused("intact copy", sizeof damaged, PICODENSE_OK);
#endif

    uint32_t correct = 0;
    for (uint32_t n = 0; n < PICODENSE_IMAGES_COUNT; n++) {
        uint32_t class = 0;
        uint32_t bits[PICODENSE_MODEL_CLASSES];
        if (info.dtype == PICODENSE_DTYPE_INT8) {
            s = picodense_int8_predict(&view, picodense_images[n], PICODENSE_MODEL_INPUTS,
                                       scratch.words, SCRATCH_WORDS, logits_q,
                                       PICODENSE_MODEL_CLASSES, &class);
            for (uint32_t c = 0; c < PICODENSE_MODEL_CLASSES; c++)
                bits[c] = (uint32_t)logits_q[c];
        } else {
            for (uint32_t i = 0; i < PICODENSE_MODEL_INPUTS; i++)
                input[i] = picodense_unit_pixel(picodense_images[n][i]);
            s = picodense_f32_predict(&view, input, PICODENSE_MODEL_INPUTS, scratch.floats,
                                      SCRATCH_WORDS, logits_f, PICODENSE_MODEL_CLASSES, &class);
            memcpy(bits, logits_f, sizeof bits);
        }
        if (s != PICODENSE_OK) {
            put("img ");
            put_u32(n);
            put(" refused: ");
            put(picodense_status_name(s));
            flush();
            ok = 0;
            continue;
        }
        correct += class == picodense_labels[n];
        put("img ");
        put_u32(n);
        put(" class ");
        put_u32(class);
        put(" label ");
        put_u32(picodense_labels[n]);
        put(" logits");
        for (uint32_t c = 0; c < PICODENSE_MODEL_CLASSES; c++) {
            put(" ");
            put_hex(bits[c]);
        }
        flush();
    }
    put("accuracy ");
    put_u32(correct);
    put("/");
    put_u32(PICODENSE_IMAGES_COUNT);
    flush();
    put("stack high-water ");
    put_u32(stack_used());
    put(" bytes");
    flush();
    put(ok ? "result pass" : "result fail");
    flush();
    return ok ? 0 : 1;
}
