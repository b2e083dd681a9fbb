"""Worker: run ONE contender on ONE workload in this (fresh) process and write a JSON record.

Usage: python bench/harness.py --workload a --contender naive [--quick] [--reps 3] --json OUT

Several comma-separated workloads/contenders run one after the other in this one process (used
by --quick runs to keep the smoke test short; RSS figures are then not from a fresh process).

Per process: import the contender's modules, build the input, run the contender once on a
tiny variant of the workload (warm-up: JIT compilation, first calls; timed separately), then
``reps`` timed runs at full size. Before each timed run the kernel's RSS high-water mark is
reset (/proc/self/clear_refs <- 5) and the current RSS is read (baseline); right after the run
ru_maxrss is read (peak). The error check against the exact answer (2*x) runs after the peak
is read and works in small chunks, so it adds nothing to the next run's peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time
import traceback

import torch

import contenders as cs
import workloads as wls

TOL = 1e-4


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def cpu_ticks() -> tuple[float, float]:
    """(busy seconds of all CPUs, steal seconds) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
    return busy / hz, (v[7] if len(v) > 7 else 0) / hz


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_input(wl: wls.Workload, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(wl.shape, generator=g, dtype=torch.float32)


def check(res, x: torch.Tensor) -> dict:
    """Max |res - 2x| over both output channels, chunked to keep temporaries small."""
    if not isinstance(res, torch.Tensor):
        res = torch.from_numpy(res)
    out = {"out_shape": list(res.shape), "out_dtype": str(res.dtype).replace("torch.", "")}
    n = x.shape[0]
    want = (n, wls.C_OUT, *x.shape[2:])
    if tuple(res.shape) != want:
        out.update(max_err=None, n_bad=None, ok=False, why=f"shape {tuple(res.shape)} != {want}")
        return out
    rows = max(1, (1 << 22) // max(1, math.prod(x.shape[3:])))
    max_err, n_bad, has_nan = 0.0, 0, False
    for i in range(n):
        for c in range(wls.C_OUT):
            for a in range(0, x.shape[2], rows):
                got = res[i, c, a : a + rows].to(torch.float32)
                d = (got - 2 * x[i, 0, a : a + rows]).abs_()
                if torch.isnan(d).any():
                    has_nan = True
                    d = torch.nan_to_num(d, nan=math.inf)
                max_err = max(max_err, float(d.max()))
                n_bad += int((d > TOL).sum())
    ok = (not has_nan) and max_err <= TOL
    why = "NaN in output" if has_nan else ("" if ok else f"max err {max_err:.3g} > {TOL}")
    out.update(max_err=max_err, n_bad=n_bad, ok=ok, why=why)
    return out


def run_once(c: cs.Contender, x: torch.Tensor, wl: wls.Workload) -> dict:
    tm = cs.Timer()
    model = cs.Model(tm)
    gc.collect()
    reset_ok = reset_hwm()
    base = rss_bytes()
    t0 = time.perf_counter()
    res, note = c.run(x, wl, tm, model)
    total = time.perf_counter() - t0
    peak = maxrss_bytes()
    rec = {
        "total": total,
        "phases": tm.phases,
        "windows": model.windows,
        "model_calls": model.calls,
        "base_rss": base,
        "peak_rss": peak,
        "hwm_reset": reset_ok,
        "note": note,
    }
    rec["check"] = check(res, x)
    del res
    return rec


def run_contender(name: str, workload: str, quick: bool, reps: int) -> dict:
    """Import, warm up and time one contender on one workload; never raises."""
    wall0 = time.perf_counter()
    wl = wls.get(workload, quick)
    c = cs.CONTENDERS[name]
    rec: dict = {
        "workload": workload,
        "contender": c.name,
        "quick": quick,
        "shape": list(wl.shape),
        "window": list(wl.window),
        "step": list(wl.step),
        "batch": wl.batch,
        "expected_windows": wls.n_windows(wl),
        "fused": c.fused,
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": loadavg(),
        "status": "error",
        "runs": [],
    }
    stage = "import"
    try:
        t0 = time.perf_counter()
        cs.setup(c.name)
        rec["import_s"] = time.perf_counter() - t0
        gc.collect()
        gc.freeze()  # imported modules are permanent: later collections scan only new objects
        rec["versions"] = versions(c)
        stage = "warm-up"
        ww = wl.warm_workload()
        xw = make_input(ww, seed=1)
        t0 = time.perf_counter()
        wres, _ = c.run(xw, ww, cs.Timer(), cs.Model(cs.Timer()))
        rec["warmup_s"] = time.perf_counter() - t0
        rec["warmup_check"] = check(wres, xw)
        del wres, xw
        stage = "input"
        x = make_input(wl)
        busy0, steal0 = cpu_ticks()
        own0, wall_t0 = own_cpu(), time.perf_counter()
        for i in range(reps):
            stage = f"run {i + 1}"
            rec["runs"].append(run_once(c, x, wl))
            if not rec["runs"][-1]["check"]["ok"]:
                break  # a wrong result is reported, not timed further
        del x
        busy1, steal1 = cpu_ticks()
        span = time.perf_counter() - wall_t0
        # CPU used by OTHER processes (and stolen by the hypervisor) while the runs went on,
        # in cores: > 0.1 means the timings were disturbed.
        rec["foreign_cores"] = max(0.0, (busy1 - busy0) - (own_cpu() - own0)) / span
        rec["steal_cores"] = (steal1 - steal0) / span
        last = rec["runs"][-1]["check"]
        rec["status"] = "ok" if all(r["check"]["ok"] for r in rec["runs"]) else "WRONG"
        if rec["status"] == "WRONG":
            rec["error"] = last["why"]
    except Exception as e:  # reported as an error row
        msg = str(e).strip().splitlines()
        rec["status"] = "error"
        rec["error"] = f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]
        rec["error_stage"] = stage
        rec["traceback"] = traceback.format_exc()[-4000:]
    rec["loadavg_after"] = loadavg()
    rec["maxrss_final"] = maxrss_bytes()
    rec["wall_s"] = time.perf_counter() - wall0
    return rec


def loadavg() -> float | None:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", required=True, help="comma list (a,b,c)")
    ap.add_argument("--contender", required=True, help="comma list")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--json", required=True, help="output JSON path (a list of records)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [c for c in args.contender.split(",") if c]
    for n in names:
        if n not in cs.CONTENDERS:
            ap.error(f"unknown contender {n!r}")
    out = []
    for w in [w for w in args.workload.split(",") if w]:
        for n in names:
            out.append(run_contender(n, w, args.quick, args.reps))
            with open(args.json, "w") as f:  # rewritten after each record: partial results survive
                json.dump(out, f, indent=1)
    return 0


def versions(c: cs.Contender) -> dict:
    from importlib import metadata

    out = {"torch": torch.__version__, "python": sys.version.split()[0]}
    dist = {
        "monai.inferers": "monai",
        "torchio": "torchio",
        "tiler": "tiler",
        "qlty": "qlty",
        "tilewise": "tilewise",
        "numpy": "numpy",
    }
    for m in c.modules:
        name = dist.get(m, m)
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            mod = sys.modules.get(m.split(".")[0])
            out[name] = getattr(mod, "__version__", "source tree")
    if c.name == "qlty":
        out["numba"] = metadata.version("numba")
    return out


if __name__ == "__main__":
    sys.exit(main())
