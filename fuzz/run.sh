#!/bin/sh
# Runs one fuzz target for a while with the project's limits; see README.md.
# Usage: fuzz/run.sh TARGET [SECONDS]   (from fuzz/; seeds: cargo run --example make_seeds)
set -eu
target=$1
seconds=${2:-600}
dict=""
if [ -f "$target.dict" ]; then
    dict="-dict=$target.dict"
fi
mkdir -p "corpus/$target" "artifacts/$target"
status=0
# An allocation over 256 MB, or 512 MB resident, counts as a crash: readers must check sizes
# before they allocate.
cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=256 \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" $dict || status=$?
# The harness's scratch files are named after the fuzzing process: drop those of finished runs.
for f in /dev/shm/picodense-fuzz-* "${TMPDIR:-/tmp}"/picodense-fuzz-*; do
    [ -e "$f" ] || continue
    pid=${f##*/picodense-fuzz-}
    pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || rm -f "$f"
done
exit "$status"
