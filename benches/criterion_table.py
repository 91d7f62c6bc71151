"""Median figures of the last `cargo bench -p picodense-benches` run, as Markdown tables.

    python3 benches/criterion_table.py [TARGET_DIR]   (default: target; reads TARGET_DIR/criterion)

gemm groups: median GFLOP/s (criterion's throughput is in flops). epoch groups: median seconds
per epoch and images per second.
"""

import json
import pathlib
import sys


def load(root):
    rows = []
    for bench in sorted(root.glob("*/*/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        median_ns = estimates["median"]["point_estimate"]
        elements = (meta.get("throughput") or {}).get("Elements")
        rows.append((meta["group_id"], meta["function_id"], median_ns, elements))
    return rows


def main():
    target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target")
    rows = load(target / "criterion")
    gemm = {}
    for group, function, ns, flops in rows:
        if group.startswith("gemm"):
            kind, shape = group.split("/", 1)
            column = function if kind == "gemm" else f"{function} ({kind.split('_', 1)[1]})"
            gemm.setdefault(shape, {})[column] = flops / ns
    preferred = ["naive", "portable", "avx2", "avx2 (2threads)", "matrixmultiply"]
    present = {c for figures in gemm.values() for c in figures}
    columns = [c for c in preferred if c in present] + sorted(present - set(preferred))
    print("| shape (m x k x n) | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for shape, figures in gemm.items():
        cells = [f"{figures[c]:.1f}" if c in figures else "-" for c in columns]
        print(f"| {shape} | " + " | ".join(cells) + " |")
    print()
    print("| epoch (60,000 images) | median s | images/s |")
    print("|---|---|---|")
    for group, function, ns, images in rows:
        if group.startswith("epoch"):
            threads = "2 threads" if "2threads" in group else "1 thread"
            print(f"| {function}, {threads} | {ns / 1e9:.3f} | {images / ns * 1e9:,.0f} |")


if __name__ == "__main__":
    main()
