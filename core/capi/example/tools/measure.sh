#!/usr/bin/env bash
# Sizes of the C example and the instructions the library executes per inference.
#
#   tools/measure.sh MODEL_H IMAGES_GZ LABELS_GZ [N] [EXTRA_CFLAGS]
#
# Builds the example twice, with the first image and with the first N (default 100), and
# counts the guest instructions executed inside the library's code (the linker script's
# .text.picodense) with the TCG plugin in core/firmware/tools: the difference over N - 1
# images is one inference, everything the library runs for it included, checks excluded.
# Needs qemu-system-arm, arm-none-eabi-gcc, newlib, gcc and glib headers (libglib2.0-dev).
set -euo pipefail
model=$1 images=$2 labels=$3 n=${4:-100} extra=${5:-}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plugin=$work/libinsncount.so
gcc -O2 -shared -fPIC $(pkg-config --cflags glib-2.0) -o "$plugin" \
    "$here/../../firmware/tools/qemu-insncount.c"

count() { # IMAGES: instructions inside the library for a build with that many images
    local dir=$work/$1
    mkdir -p "$dir"
    cp "$model" "$dir/model.h"
    "$here/tools/images-h.sh" "$images" "$labels" "$1" >"$dir/images.h"
    make -s -C "$here" DATA="$dir" BUILD="$dir/build" EXTRA_CFLAGS="$extra" >/dev/null
    local elf=$dir/build/picodense-example.elf
    local lo hi
    lo=$((16#$(arm-none-eabi-nm "$elf" | awk '$3 == "__picodense_text_start" {print $1}')))
    hi=$((16#$(arm-none-eabi-nm "$elf" | awk '$3 == "__picodense_text_end" {print $1}')))
    qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
        -semihosting-config enable=on,target=native \
        -plugin "$plugin,lo=$lo,hi=$hi" -d plugin -kernel "$elf" 2>&1 >/dev/null |
        sed -n 's/.*in_range\[[^]]*)=\([0-9]*\).*/\1/p'
}

one=$(count 1)
all=$(count "$n")
elf=$work/$n/build/picodense-example.elf
arm-none-eabi-size -A "$elf" | awk '$1 ~ /^\.(vectors|text|text\.picodense|rodata|ARM\.exidx|data|bss)$/'
qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
    -semihosting-config enable=on,target=native -kernel "$elf" | grep -v '^img '
echo "library instructions per inference: $(((all - one) / (n - 1))) ($n images)"
