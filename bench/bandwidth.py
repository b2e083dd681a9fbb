"""Memory-bandwidth probe, run in its own process as part of every benchmark run.

copy: torch ``dst.copy_(src)`` between two preallocated, already-touched float32 buffers;
      rate = (bytes read + bytes written) / time.
first_touch: ``torch.empty(n).fill_(1)`` into freshly allocated memory (a large allocation is a
      fresh mmap, so every page is faulted in); rate = bytes written / time (allocation included).
fresh_copy: ``torch.empty(n).copy_(src)`` into fresh memory; (read + written) / time, for reference.
Each is the median of ``reps`` measurements after one untimed warm-up.
omp_region_us: median time of one small multi-threaded torch op (x * 2 on 64 Ki floats), i.e.
      the cost of entering an OpenMP parallel region. A few tens of microseconds on an idle
      machine; milliseconds mean the cores are contended and every batched contender pays that
      per torch call, so the timings of that run are not trustworthy.

Usage: python bench/bandwidth.py [--mib 512] [--reps 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def _median_rate(fn, nbytes: int, reps: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    rates = [nbytes / t / 1e9 for t in times]
    return statistics.median(rates), rates


def measure(mib: int = 512, reps: int = 5) -> dict:
    n = mib * (1 << 20) // 4
    nb = n * 4
    src = torch.empty(n, dtype=torch.float32).fill_(1.0)
    dst = torch.empty(n, dtype=torch.float32).fill_(0.0)

    def copy():
        dst.copy_(src)

    def first_touch():
        t = torch.empty(n, dtype=torch.float32)
        t.fill_(1.0)
        del t

    def fresh_copy():
        t = torch.empty(n, dtype=torch.float32)
        t.copy_(src)
        del t

    small = torch.rand(1 << 16)
    region = []
    for _ in range(200):
        t0 = time.perf_counter()
        small.mul(2.0)
        region.append(time.perf_counter() - t0)
    del small

    copy_gbps, copy_all = _median_rate(copy, 2 * nb, reps)
    ft_gbps, ft_all = _median_rate(first_touch, nb, reps)
    fc_gbps, fc_all = _median_rate(fresh_copy, 2 * nb, reps)
    return {
        "buffer_mib": mib,
        "reps": reps,
        "torch_threads": torch.get_num_threads(),
        "copy_GBps": copy_gbps,
        "first_touch_GBps": ft_gbps,
        "fresh_copy_GBps": fc_gbps,
        "omp_region_us": statistics.median(region) * 1e6,
        "copy_all": copy_all,
        "first_touch_all": ft_all,
        "fresh_copy_all": fc_all,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="memory bandwidth probe")
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = measure(args.mib, args.reps)
    text = json.dumps(res, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
