#!/usr/bin/env bash
# Sizes of a firmware ELF and the guest instructions its inference function executes per image.
#
#   tools/measure.sh ELF [QEMU machine arguments...]
#
# Default machine: -cpu cortex-m4 -machine mps2-an386 (use `-machine netduinoplus2` for the
# STM32F405 build). Needs qemu-system-arm, binutils-arm-none-eabi, gcc and glib headers
# (libglib2.0-dev) to build the TCG plugin.
set -euo pipefail
elf=$1
shift
machine=("$@")
[ ${#machine[@]} -gt 0 ] || machine=(-cpu cortex-m4 -machine mps2-an386)
here=$(cd "$(dirname "$0")" && pwd)
plugin=${TMPDIR:-/tmp}/picodense-libinsncount.so
if [ ! -f "$plugin" ] || [ "$here/qemu-insncount.c" -nt "$plugin" ]; then
    gcc -O2 -shared -fPIC $(pkg-config --cflags glib-2.0) -o "$plugin" "$here/qemu-insncount.c"
fi

arm-none-eabi-size -A "$elf" | awk '$1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/'
while read -r _ size _ name; do
    echo "embedded model file: $((16#$size)) bytes"
done < <(arm-none-eabi-nm -S -C "$elf" | grep -E 'picodense_firmware::MODEL')

qemu() {
    qemu-system-arm "${machine[@]}" -nographic -semihosting-config enable=on,target=native "$@" \
        -kernel "$elf"
}
images=$(qemu | awk '/^img / {n++} END {print n + 0}')
qemu | grep -E '^(picodense|accuracy|mismatches|stack|result)'

# Instructions inside one function's address range, summed over every image, per image. The
# core's functions are matched by their last path segments, so moving a module keeps them.
for pattern in '^picodense_firmware::infer_int8$' '::Int8View::predict$' \
    '^picodense_firmware::infer_f32$' '^picodense_core::.*::dense_f32$'; do
    read -r addr size sym < <(arm-none-eabi-nm -S -C "$elf" |
        awk -v p="$pattern" '$4 ~ p {print $1, $2, $4; exit}') || continue
    lo=$((16#$addr))
    hi=$((lo + 16#$size))
    count=$(qemu -plugin "$plugin,lo=$lo,hi=$hi" -d plugin 2>&1 >/dev/null |
        sed -n 's/.*in_range\[[^]]*)=\([0-9]*\).*/\1/p')
    [ "${count:-0}" -gt 0 ] || continue
    echo "$sym: $((count / images)) instructions per image ($images images)"
done
