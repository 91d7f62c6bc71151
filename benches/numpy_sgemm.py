"""numpy (OpenBLAS) sgemm GFLOP/s at the shapes of benches/kernels.rs, for comparison.

Run with one thread and without the OpenBLAS overrides some machines set, e.g.:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python3 benches/numpy_sgemm.py
Needs numpy and threadpoolctl (pip install numpy threadpoolctl). Prints which BLAS and kernel
(threadpoolctl's "architecture") ran, then median and best GFLOP/s over timed bursts, in the
calling thread's CPU time (as the single-thread criterion groups measure; OpenBLAS on one thread
computes in the caller) and in wall time.
"""

import sys
import time

import numpy as np
from threadpoolctl import threadpool_info

SHAPES = {
    "fwd_128x784x512": (128, 784, 512, False, False),
    "wgrad_784x128x512": (784, 128, 512, True, False),
    "out_128x512x10": (128, 512, 10, False, False),
    "back_128x10x512": (128, 10, 512, False, True),
    "square_1024x1024x1024": (1024, 1024, 1024, False, False),
}


def measure(m, k, n, a_t, b_t, bursts=60):
    rng = np.random.default_rng(0)
    # Transposed operands are views of row-major storage, as in the Rust benchmark.
    a = rng.uniform(-1, 1, (k, m) if a_t else (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, k) if b_t else (k, n)).astype(np.float32)
    a, b = (a.T if a_t else a), (b.T if b_t else b)
    c = np.empty((m, n), dtype=np.float32)
    flops = 2.0 * m * k * n
    calls = max(1, int(2e7 / flops))
    for _ in range(3 * calls):
        np.matmul(a, b, out=c)
    cpu, wall = [], []
    for _ in range(bursts):
        start_cpu, start_wall = time.thread_time(), time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=c)
        cpu.append(flops * calls / (time.thread_time() - start_cpu) / 1e9)
        wall.append(flops * calls / (time.perf_counter() - start_wall) / 1e9)
    cpu.sort()
    wall.sort()
    return cpu[len(cpu) // 2], cpu[-1], wall[len(wall) // 2]


def main():
    for pool in threadpool_info():
        print(
            f"{pool.get('internal_api')} {pool.get('version')} "
            f"kernel={pool.get('architecture')} threads={pool.get('num_threads')}"
        )
    names = sys.argv[1:] or list(SHAPES)
    for name in names:
        cpu_median, cpu_best, wall_median = measure(*SHAPES[name])
        print(
            f"{name:24} thread-CPU median {cpu_median:6.1f} GFLOP/s, best {cpu_best:6.1f}; "
            f"wall median {wall_median:6.1f}"
        )


if __name__ == "__main__":
    main()
