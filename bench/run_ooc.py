"""Run the out-of-core inference benchmark: zarr on disk in, zarr on disk out.

Input (1,1,512,1024,1024) float32 in an uncompressed zarr v3 array (chunks 128^3) generated once
into a cache directory; window 128, step 96, batch 4, model ``torch.cat([2*x, 2*x], 1)``; the
output goes to a zarr array on disk and is checked against ``2*x`` chunk by chunk. Each
contender runs in a fresh process, one at a time, under a wall-clock limit and a memory guard.
Then tilewise alone runs on an input 4x larger (first axis 2048) to show that its peak memory
does not grow with the volume. A disk probe measures the write rate with fsync (the disk bound).

Writes bench/results/<stamp>-ooc[-quick].json and .md; a full-size run with every contender and
the scaling run also rewrites the out-of-core section of bench/README.md (between the
ooc-results markers).

Examples:
  python bench/run_ooc.py --quick                   # small sizes, smoke test (~1 min)
  python bench/run_ooc.py                           # full size: every contender + scaling
  python bench/run_ooc.py -c tilewise --no-scale    # one contender
  python bench/run_ooc.py --combine a.json b.json   # one report from earlier runs' records
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START = "<!-- ooc-results:start -->"
END = "<!-- ooc-results:end -->"
MIB = 1 << 20
GIB = 1 << 30
CONTENDED = 0.15
TARGET_SPEEDUP = 10.0  # tilewise vs MONAI ZarrAvgMerger (defaults)
TARGET_RSS = GIB  # tilewise absolute peak RSS
TARGET_FLAT = 1.10  # tilewise peak RSS at 4x volume / at 1x
ORDER = ["tilewise", "tilewise_zstd", "naive_zarr", "monai_zarr", "monai_zarr_tuned", "qlty_large"]
DEFAULT = ["tilewise", "tilewise_zstd", "naive_zarr", "monai_zarr", "qlty_large"]


# ---------------------------------------------------------------------------------------------
# worker: one contender, one workload, this (fresh) process


def worker(args) -> int:
    import torch

    import harness as hs
    import ooc_contenders as oc
    from contenders import Model, Timer

    if args.threads:
        torch.set_num_threads(args.threads)
    wl = oc.WORKLOADS[args.workload]
    c = oc.CONTENDERS[args.contender]
    data_dir = Path(args.data_dir)
    work_root = Path(args.work)
    rec: dict = {
        "contender": c.name,
        "workload": wl.name,
        "shape": list(wl.shape),
        "window": list(wl.window),
        "step": list(wl.step),
        "chunks": list(wl.chunks),
        "batch": wl.batch,
        "expected_windows": wl.windows,
        "torch_threads": torch.get_num_threads(),
        "status": "error",
        "runs": [],
        "pid": os.getpid(),
    }

    def save() -> None:
        Path(args.json).write_text(json.dumps(rec, indent=1))

    stage = "import"
    try:
        t0 = time.perf_counter()
        oc.setup(c.name)
        rec["import_s"] = time.perf_counter() - t0
        rec["versions"] = versions(c.modules)
        gc.collect()
        gc.freeze()
        stage = "warm-up"
        ww = oc.WORKLOADS[wl.warm]
        wsrc = oc.ensure_input(ww, data_dir)
        wdir = work_root / "warm"
        wdir.mkdir(parents=True)
        t0 = time.perf_counter()
        wout, _ = c.run(wsrc, wdir, ww, Timer(), Model(Timer()))
        rec["warmup_s"] = time.perf_counter() - t0
        rec["warmup_check"] = oc.check_output(wout, wsrc, ww)
        shutil.rmtree(wdir)
        save()
        src = wl.input_path(data_dir)
        progress: dict = {}
        beat = threading.Thread(
            target=_heartbeat, args=(Path(args.json + ".progress"), progress), daemon=True
        )
        beat.start()
        busy0, steal0 = hs.cpu_ticks()
        own0, wall0 = hs.own_cpu(), time.perf_counter()
        for i in range(args.reps):
            stage = f"run {i + 1}"
            work = work_root / f"run{i + 1}"
            work.mkdir(parents=True)
            tm = Timer()
            model = Model(tm)
            progress.update(run=i + 1, model=model, t0=time.perf_counter(), tm=tm)
            gc.collect()
            reset_ok = hs.reset_hwm()
            base = hs.rss_bytes()
            cpu0 = hs.own_cpu()
            t0 = time.perf_counter()
            out, info = c.run(src, work, wl, tm, model)
            total = time.perf_counter() - t0
            cpu = hs.own_cpu() - cpu0
            peak = hs.maxrss_bytes()
            stage = f"run {i + 1} (fsync)"
            flush = oc.fsync_tree(work)
            run = {
                "total": total,
                "cpu": cpu,
                "flush": flush,
                "phases": tm.phases,
                "model_windows": model.windows,
                "model_calls": model.calls,
                "base_rss": base,
                "peak_rss": peak,
                "hwm_reset": reset_ok,
                "disk_bytes": oc.tree_bytes(work),
                "out_bytes": oc.tree_bytes(Path(out)),
                **info,
            }
            rec["runs"].append(run)
            save()
            stage = f"run {i + 1} (check)"
            run["check"] = oc.check_output(Path(out), src, wl)
            shutil.rmtree(work)
            save()
            if not run["check"]["ok"]:
                break
        busy1, steal1 = hs.cpu_ticks()
        span = time.perf_counter() - wall0
        own = hs.own_cpu() - own0
        rec["foreign_cores"] = max(0.0, (busy1 - busy0) - own) / span
        rec["steal_cores"] = (steal1 - steal0) / span
        rec["status"] = "ok" if all(r["check"]["ok"] for r in rec["runs"]) else "WRONG"
        if rec["status"] == "WRONG":
            rec["error"] = rec["runs"][-1]["check"]["why"]
    except Exception as e:
        msg = str(e).strip().splitlines()
        rec["status"] = "error"
        rec["error"] = f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]
        rec["error_stage"] = stage
        rec["traceback"] = traceback.format_exc()[-4000:]
    save()
    return 0


def _heartbeat(path: Path, progress: dict) -> None:
    """Every 5 s, write how far the timed run got (read by the parent after a timeout)."""
    while True:
        time.sleep(5)
        m = progress.get("model")
        if m is None:
            continue
        state = {
            "run": progress["run"],
            "elapsed_s": time.perf_counter() - progress["t0"],
            "model_windows": m.windows,
            "phases": dict(progress["tm"].phases),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)


def versions(modules) -> dict:
    from importlib import metadata

    import torch

    out = {"torch": torch.__version__, "python": sys.version.split()[0]}
    dist = {"monai.inferers": "monai"}
    for m in (*modules, "numpy"):
        name = dist.get(m, m)
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            mod = sys.modules.get(m.split(".")[0])
            out[name] = getattr(mod, "__version__", "source tree")
    if "qlty" in modules:
        out["dask"] = metadata.version("dask")
    return out


# ---------------------------------------------------------------------------------------------
# parent: disk probe, guard, report


def disk_probe(data_dir: Path, mib: int, reps: int) -> dict:
    """Write ``mib`` MiB of random bytes to a new file, fsync, close; median rate of ``reps``."""
    import numpy as np

    data_dir.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(0).integers(0, 256, 64 * MIB, dtype=np.uint8).tobytes()
    n = max(1, mib // 64)
    rates = []
    path = data_dir / "disk-probe.bin"
    for _ in range(reps):
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(n):
                os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)
        secs = time.perf_counter() - t0
        rates.append(n * len(block) / secs / 1e9)
        path.unlink()
    return {"mib": n * 64, "reps": reps, "write_fsync_GBps": statistics.median(rates), "all": rates}


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith(key + ":"):
                    return int(ln.split()[1])
    except (OSError, ValueError):
        return None
    return None


def mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                if ln.startswith("MemAvailable:"):
                    return int(ln.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def run_guarded(cmd, env, timeout: float, rss_cap: int, min_avail: int) -> tuple[str, dict]:
    """Run a child in its own process group; kill it (the group) past ``timeout`` seconds,
    past ``rss_cap`` bytes of RSS, or when free memory drops below ``min_avail``.
    Returns (why it was killed or "", guard stats)."""
    p = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    t0 = time.perf_counter()
    why, max_rss, min_free = "", 0, None
    while p.poll() is None:
        time.sleep(0.25)
        rss = (_status_kib(p.pid, "VmRSS") or 0) * 1024
        max_rss = max(max_rss, rss)
        avail = mem_available()
        if avail is not None:
            min_free = avail if min_free is None else min(min_free, avail)
        el = time.perf_counter() - t0
        if el > timeout:
            why = f"timeout after {timeout:.0f} s"
        elif rss > rss_cap:
            why = f"memory guard: RSS {rss / GIB:.1f} GiB > cap {rss_cap / GIB:.1f} GiB"
        elif avail is not None and avail < min_avail:
            why = (
                f"memory guard: machine's available memory {avail / GIB:.1f} GiB < "
                f"{min_avail / GIB:.1f} GiB (child RSS {rss / GIB:.1f} GiB)"
            )
        if why:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            break
    out = p.stdout.read().decode(errors="replace") if p.stdout else ""
    if p.returncode and not why:
        tail = out.strip().splitlines()[-3:]
        why = f"process died rc={p.returncode}: {' | '.join(tail)}"[:300]
    return why, {
        "wall_s": time.perf_counter() - t0,
        "sampled_max_rss": max_rss,
        "min_mem_available": min_free,
        "output_tail": out[-3000:],
    }


def expected_disk(name: str, vox: int) -> int:
    """Rough bytes a contender writes (output + temporaries), uncompressed."""
    per_vox = {
        "tilewise": 8,  # 2 ch float32
        "tilewise_zstd": 8,
        "naive_zarr": 12,  # acc 2 ch + cnt 1 ch float32
        "monai_zarr": 18,  # values 2x4 + counts 2x1 + output 2x4
        "monai_zarr_tuned": 18,
        "qlty_large": 40,  # mean cache 2x8 + norma 8 + mean 2x8
    }
    return per_vox.get(name, 40) * vox


def used_bytes(data_dir: Path) -> int:
    import ooc_contenders as oc

    return oc.tree_bytes(data_dir)


def make_room(data_dir: Path, keep: Path, need: int, budget: int, log) -> bool:
    """Delete cached inputs other than ``keep`` while the budget would be exceeded."""
    if used_bytes(data_dir) + need <= budget:
        return True
    for p in sorted(data_dir.glob("ooc-input-*.zarr")):
        if p.resolve() == keep.resolve():
            continue
        log(f"disk budget: removing cached input {p.name} (regenerated when needed)")
        shutil.rmtree(p, ignore_errors=True)
        if used_bytes(data_dir) + need <= budget:
            return True
    return used_bytes(data_dir) + need <= budget


def busy_cores(secs: float = 3.0) -> float:
    """Cores used by all processes (and stolen) over ``secs`` seconds, from /proc/stat."""
    import harness as hs

    b0, s0 = hs.cpu_ticks()
    own0 = hs.own_cpu()
    time.sleep(secs)
    b1, s1 = hs.cpu_ticks()
    return max(0.0, (b1 - b0) - (hs.own_cpu() - own0) + (s1 - s0)) / secs


def wait_idle(limit: float, threshold: float = 0.2) -> dict:
    """Wait (up to ``limit`` seconds) until the machine is idle: other processes use less than
    ``threshold`` cores over a few seconds. Returns what was seen."""
    t0 = time.perf_counter()
    seen = busy_cores()
    announced = False
    while seen > threshold and time.perf_counter() - t0 < limit:
        if not announced:
            log(f"waiting for an idle machine (other processes use {seen:.2f} cores) ...")
            announced = True
        time.sleep(10)
        seen = busy_cores()
    return {"waited_s": time.perf_counter() - t0, "busy_cores_at_start": seen}


def log(msg: str) -> None:
    print(f"[ooc] {msg}", file=sys.stderr, flush=True)


def run_one(name: str, wname: str, args, env, data_dir: Path, tmp: Path) -> dict:
    import ooc_contenders as oc

    wl = oc.WORKLOADS[wname]
    src = oc.ensure_input(wl, data_dir, log)
    oc.ensure_input(oc.WORKLOADS[wl.warm], data_dir, log)
    budget = int(args.disk_budget_gb * 1e9)
    need = expected_disk(name, wl.voxels)
    base = {"contender": name, "workload": wname, "expected_windows": wl.windows, "runs": []}
    if not make_room(data_dir, src, need, budget, log):
        used = used_bytes(data_dir)
        why = (
            f"skipped: disk budget {budget / 1e9:.0f} GB would be exceeded "
            f"({used / 1e9:.1f} GB used + ~{need / 1e9:.1f} GB needed)"
        )
        return {**base, "status": "error", "error": why, "error_stage": "disk"}
    pre = oc.preload(src)
    idle = wait_idle(args.wait_idle) if args.wait_idle > 0 else None
    work = data_dir / f"work-{name}-{wname}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    jp = tmp / f"{wname}-{name}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--contender",
        name,
        "--workload",
        wname,
        "--reps",
        str(args.reps),
        "--data-dir",
        str(data_dir),
        "--work",
        str(work),
        "--json",
        str(jp),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    timeout = args.timeout or (300.0 if args.quick else 1800.0)
    if name == "qlty_large" and not args.quick:
        timeout = min(timeout, args.qlty_timeout)
    loads0 = os.getloadavg()
    log(f"{wname} {name}: running (timeout {timeout:.0f} s) ...")
    why, guard = run_guarded(
        cmd, env, timeout, int(args.rss_cap_gib * GIB), int(args.min_free_gib * GIB)
    )
    rec = json.loads(jp.read_text()) if jp.exists() else dict(base)
    rec.setdefault("runs", [])
    rec["preload_s"] = pre
    rec["idle"] = idle
    rec["guard"] = guard
    rec["loadavg_before"] = loads0[0]
    rec["loadavg_after"] = os.getloadavg()[0]
    if why:
        rec["status"] = "timeout" if why.startswith("timeout") else "killed"
        rec["error"] = why
        rec["error_stage"] = "guard"
        prog = Path(str(jp) + ".progress")
        if prog.exists():
            rec["progress"] = json.loads(prog.read_text())
            p = rec["progress"]
            rec["error"] += (
                f"; timed run {p['elapsed_s']:.0f} s in: {p['model_windows']} of {wl.windows} "
                "windows through the model, phases "
                + ", ".join(f"{k} {v:.0f} s" for k, v in p["phases"].items())
            )
    leftover = oc.tree_bytes(work)
    shutil.rmtree(work, ignore_errors=True)
    rec["leftover_bytes_removed"] = leftover
    _progress(rec)
    return rec


def _progress(rec: dict) -> None:
    runs = rec.get("runs") or []
    msg = rec["status"]
    if runs and "total" in runs[-1]:
        r = runs[-1]
        msg += (
            f" total {r['total']:.1f}s flush {r['flush']:.1f}s peak {r['peak_rss'] / MIB:.0f} MiB"
        )
        if "check" in r:
            msg += f" max err {r['check'].get('max_err')}"
    if rec["status"] != "ok":
        msg += f" {rec.get('error', '')}"[:200]
    log(f"{rec['workload']} {rec['contender']}: {msg}")


# ---------------------------------------------------------------------------------------------
# report


def _s(v) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _e(v) -> str:
    if v is None:
        return "-"
    return "0" if v == 0 else f"{v:.1e}"


def _mib(v) -> str:
    return "-" if v is None else f"{v / MIB:.0f}"


def _gb(v) -> str:
    return "-" if v is None else f"{v / 1e9:.2f}"


def best_run(rec: dict) -> dict | None:
    runs = [r for r in rec.get("runs", []) if "total" in r]
    return min(runs, key=lambda r: r["total"]) if runs else None


def bounds(wl_shape, disk: dict | None) -> dict:
    """Disk bound: the output (2 channels float32) must be written once; the landscape's
    bound also counts reading the input once at the same rate."""
    import math

    vox = math.prod(wl_shape[2:])
    out_b, in_b = 8 * vox, 4 * vox
    res = {"out_bytes": out_b, "in_bytes": in_b}
    if disk:
        rate = disk["write_fsync_GBps"] * 1e9
        res["write_s"] = out_b / rate
        res["in_out_s"] = (out_b + in_b) / rate
    return res


def summarise(rec: dict, bound: dict) -> dict:
    r = best_run(rec)
    row: dict = {
        "contender": rec["contender"],
        "workload": rec["workload"],
        "status": rec["status"],
        "runs": len(rec.get("runs", [])),
    }
    notes = []
    if r is not None:
        ph = r.get("phases", {})
        row.update(
            total=r["total"],
            cpu=r.get("cpu"),
            flush=r.get("flush"),
            model=ph.get("model"),
            read=ph.get("read"),
            stitch=ph.get("stitch"),
            finalize=ph.get("finalize"),
            peak=r["peak_rss"],
            base=r["base_rss"],
            added=max(0, r["peak_rss"] - r["base_rss"]),
            disk=r.get("disk_bytes"),
            out=r.get("out_bytes"),
            windows=r.get("windows") or rec.get("expected_windows"),
            windows_run=r.get("windows_run"),
            max_err=(r.get("check") or {}).get("max_err"),
        )
        if bound.get("write_s"):
            row["x_bound"] = (r["total"] + (r.get("flush") or 0.0)) / bound["write_s"]
        if r.get("note"):
            notes.append(r["note"])
        chk = r.get("check") or {}
        if chk.get("out_dtype") and chk["out_dtype"] != "float32":
            notes.append(f"output dtype {chk['out_dtype']}")
        if chk.get("out_codecs"):
            notes.append("output codecs " + "+".join(chk["out_codecs"]))
        if not r.get("hwm_reset", True):
            notes.append("RSS high-water could not be reset")
    g = rec.get("guard") or {}
    if g.get("sampled_max_rss") and r is None:
        row["peak"] = g["sampled_max_rss"]
        notes.append(f"sampled RSS reached {g['sampled_max_rss'] / GIB:.1f} GiB before the end")
    row["warmup"] = rec.get("warmup_s")
    contention = (rec.get("foreign_cores") or 0.0) + (rec.get("steal_cores") or 0.0)
    if contention > CONTENDED:
        notes.append(f"contended: other processes used {contention:.2f} cores")
    if rec["status"] != "ok":
        notes.insert(0, f"**{rec['status']}** ({rec.get('error_stage', '')}): {rec.get('error')}")
        if rec.get("loadavg_before") is not None and "foreign_cores" not in rec:
            notes.append(
                f"load average {rec['loadavg_before']:.1f} before, "
                f"{rec.get('loadavg_after', 0):.1f} after (other work on the machine)"
            )
    row["note"] = "; ".join(n for n in notes if n).replace("|", "/")
    return row


def targets(rows: list[dict]) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "**NOT met**"

    by = {(r["workload"], r["contender"]): r for r in rows}
    main = next((w for w in ("full", "quick") if (w, "tilewise") in by), None)
    out = []
    tw = by.get((main, "tilewise")) if main else None
    if not tw or tw["status"] != "ok":
        return ["- tilewise has no correct result: no target can be judged."]
    mz = by.get((main, "monai_zarr"))
    if mz and mz["status"] == "ok":
        sp = mz["total"] / tw["total"]
        spf = (mz["total"] + (mz["flush"] or 0)) / (tw["total"] + (tw["flush"] or 0))
        out.append(
            f"- speed: MONAI ZarrAvgMerger (defaults) {_s(mz['total'])} s / tilewise "
            f"{_s(tw['total'])} s = **{sp:.1f}x** (with the fsync of the output: {spf:.1f}x); "
            f"target >= {TARGET_SPEEDUP:.0f}x: {mark(sp >= TARGET_SPEEDUP)}."
        )
        tz = by.get((main, "tilewise_zstd"))
        if tz and tz["status"] == "ok":
            out.append(
                f"- same codec as MONAI's stores (zarr's zstd): tilewise {_s(tz['total'])} s, "
                f"MONAI / tilewise = {mz['total'] / tz['total']:.1f}x."
            )
    elif mz:
        out.append(f"- speed: MONAI ZarrAvgMerger has no correct result ({mz['status']}).")
    others = [
        f"{r['contender']} {r['total'] / tw['total']:.1f}x"
        for (w, c), r in by.items()
        if w == main
        and c not in ("tilewise", "monai_zarr", "tilewise_zstd")
        and r["status"] == "ok"
    ]
    if others:
        out.append("- other peers (peer time / tilewise time): " + ", ".join(others) + ".")
    out.append(
        f"- memory: tilewise peak RSS {_mib(tw['peak'])} MiB absolute ({_mib(tw['added'])} MiB "
        f"above its baseline); target < {TARGET_RSS // MIB} MiB: {mark(tw['peak'] < TARGET_RSS)}."
    )
    big = by.get(("x4" if main == "full" else "quick-x4", "tilewise"))
    if big and big["status"] == "ok":
        ratio = big["peak"] / tw["peak"]
        out.append(
            f"- scaling (volume x4): peak RSS {_mib(big['peak'])} MiB vs {_mib(tw['peak'])} MiB "
            f"= {ratio:.2f}x (added {_mib(big['added'])} vs {_mib(tw['added'])} MiB); target "
            f"flat (<= {TARGET_FLAT:.2f}x): {mark(ratio <= TARGET_FLAT)}. Time {_s(big['total'])} "
            f"s vs {_s(tw['total'])} s = {big['total'] / tw['total']:.2f}x for 4x the voxels."
        )
    elif big:
        out.append(f"- scaling (volume x4): no correct result ({big['status']}).")
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    disk = results.get("disk")
    if results.get("combined_from"):
        runs = {}
        for r in results["records"]:
            runs.setdefault((r.get("started"), r.get("command")), []).append(r["contender"])
        head = [
            f"Combined report ({'QUICK sizes' if results['quick'] else 'full size'}) from "
            f"{len(runs)} runs, each contender in a fresh process, one at a time:",
            "",
            *[f"- {st}: `{cmd}` ({', '.join(cs)})" for (st, cmd), cs in runs.items()],
        ]
    else:
        head = [
            f"Run {results['started']} ({'QUICK sizes' if results['quick'] else 'full size'}), "
            f"`{results['command']}`, {results['reps']} timed run(s) per fresh process, "
            "contenders one at a time."
        ]
    lines = [
        *head,
        "",
        f"Machine: {m.get('cpu')}, {m.get('cpus')} CPUs, {m.get('mem_gib')} GiB RAM, Python "
        f"{m.get('python')}, torch {m.get('torch')} ({m.get('torch_threads')} threads), "
        f"{m.get('platform')}.",
    ]
    vers: dict = {}
    for rec in results["records"]:
        vers.update(rec.get("versions") or {})
    if vers:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(vers.items())) + ".")
    for rec in results["records"]:
        st = rec.get("source")
        if rec["contender"] == "tilewise" and st:
            dirty = f" + uncommitted changes to {', '.join(st['dirty'])}" if st["dirty"] else ""
            lines.append(f"tilewise source ({rec['workload']}): commit {st['commit']}{dirty}.")
    lines.append("")
    if disk:
        lines.append(
            f"Disk ({results.get('data_dir')}): write with fsync {disk['write_fsync_GBps']:.2f} "
            f"GB/s ({disk['mib']} MiB file, median of {disk['reps']}; landscape: 1.46 GB/s)."
        )
    worst = max(
        ((r.get("foreign_cores") or 0.0) + (r.get("steal_cores") or 0.0))
        for r in results["records"]
    )
    if worst > CONTENDED:
        lines += [
            "",
            f"**Warning: other processes used up to {worst:.2f} cores while contenders ran (see "
            "`contended` notes); rerun on an idle machine for trustworthy timings.**",
        ]
    lines.append("")
    lines.append(
        "| workload | windows | output (float32, 2 ch) | disk bound: write output | "
        "disk bound: input + output |"
    )
    lines.append("|---|---|---|---|---|")
    for wname, w in results["workloads"].items():
        b = w["bound"]
        lines.append(
            f"| {wname}: {w['description']} | {w['windows']} | {b['out_bytes'] / 1e9:.2f} GB "
            f"| {_s(b.get('write_s'))} s | {_s(b.get('in_out_s'))} s |"
        )
    lines += [
        "",
        "Times in seconds (wall). `total` = the contender's call, from the input path to the "
        "output on disk (page cache); `cpu` = CPU time (user + system, all threads) of the "
        "contender's process in that call: less sensitive than `total` to other work on the "
        "machine; `fsync` = fsync of every output file afterwards; `model` = "
        "time in the model; `read` / `stitch` / `finalize` = the peers' own phases (tilewise runs "
        "them in one call). `x bound` = (total + fsync) / (output bytes / disk write rate). RSS "
        "in MiB: `peak` = ru_maxrss of the fresh process (high-water reset before the timed "
        "run), `base` = RSS just before it (imports + warm-up), `added` = peak - base. `disk` = "
        "bytes the contender left in its work directory (output + temporaries), `max err` = "
        "max |out - 2x| read back chunk by chunk.",
        "",
    ]
    hdr = (
        "| workload | contender | status | windows (runs) | read | model | stitch | finalize "
        "| total | cpu | fsync | x bound | warm-up | peak | base | added | disk (GB) | max err "
        "| note |"
    )
    lines.append(hdr)
    lines.append("|" + "---|" * (hdr.count("|") - 1))
    rows = []
    for rec in results["records"]:
        wname = rec["workload"]
        rows.append(summarise(rec, results["workloads"][wname]["bound"]))
    for r in rows:
        ok = r["status"] == "ok"
        wr = str(r.get("windows", "-"))
        if r.get("windows_run") and r["windows_run"] != r.get("windows"):
            wr += f" ({r['windows_run']})"
        cells = [
            r["workload"],
            r["contender"],
            r["status"],
            wr,
            _s(r.get("read")),
            _s(r.get("model")),
            _s(r.get("stitch")),
            _s(r.get("finalize")),
            _s(r.get("total")) if ok else "-",
            _s(r.get("cpu")) if ok else "-",
            _s(r.get("flush")) if ok else "-",
            f"{r['x_bound']:.1f}" if ok and r.get("x_bound") else "-",
            _s(r.get("warmup")),
            _mib(r.get("peak")),
            _mib(r.get("base")),
            _mib(r.get("added")),
            _gb(r.get("disk")),
            _e(r.get("max_err")),
            r["note"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets:", "", *targets(rows)]
    return "\n".join(lines) + "\n"


def update_readme(text: str) -> None:
    body = README.read_text()
    if START not in body or END not in body:
        raise SystemExit(f"{README} has no {START} / {END} markers")
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{text}{END}{tail}")


def source_state() -> dict:
    """The tilewise source tree the run used: commit and uncommitted files under src/."""
    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": head, "dirty": [ln[3:] for ln in dirty]}


def workload_info(names, disk) -> dict:
    import ooc_contenders as oc

    out = {}
    for w in names:
        wl = oc.WORKLOADS[w]
        out[w] = {
            "description": wl.description,
            "shape": list(wl.shape),
            "windows": wl.windows,
            "bound": bounds(wl.shape, disk),
        }
    return out


def combine(paths: list[str], args) -> dict:
    """One results dict from the records of earlier runs (later files win)."""
    recs: dict = {}
    first = None
    disk = None
    for p in paths:
        res = json.loads(Path(p).read_text())
        first = first or res
        disk = res.get("disk") or disk
        for r in res["records"]:
            r.setdefault("command", res["command"])
            r.setdefault("started", res["started"])
            recs[(r["workload"], r["contender"])] = r
    assert first is not None
    order = {c: i for i, c in enumerate(ORDER)}
    records = sorted(
        recs.values(),
        key=lambda r: (r["workload"] not in ("full", "quick"), order.get(r["contender"], 99)),
    )
    wnames = list(dict.fromkeys(r["workload"] for r in records))
    return {
        **first,
        "command": args.command_line or first["command"],
        "combined_from": paths,
        "disk": disk,
        "records": records,
        "workloads": workload_info(wnames, disk),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument(
        "-c",
        "--contenders",
        default="default",
        help="comma list or 'default' (" + ",".join(DEFAULT) + ") or 'all' (adds "
        "monai_zarr_tuned: 128^3 chunks, uncompressed)",
    )
    ap.add_argument("--no-scale", action="store_true", help="skip the 4x tilewise scaling run")
    ap.add_argument("--scale-only", action="store_true", help="only the 4x tilewise run")
    ap.add_argument("--reps", type=int, default=1, help="timed runs per process (default 1)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per contender process")
    ap.add_argument("--qlty-timeout", type=float, default=900.0, help="full-size qlty limit")
    ap.add_argument("--rss-cap-gib", type=float, default=20.0, help="kill a child above this RSS")
    ap.add_argument(
        "--min-free-gib",
        type=float,
        default=1.0,
        help="kill a child when the machine's available memory drops below this",
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each contender, wait up to this many seconds for other processes to use "
        "< 0.2 cores (shared machine); 0 = do not wait",
    )
    ap.add_argument("--disk-budget-gb", type=float, default=40.0, help="data dir limit (GB)")
    ap.add_argument("--data-dir", default=os.environ.get("TILEWISE_BENCH_DATA", ""))
    ap.add_argument("--no-disk-probe", action="store_true")
    ap.add_argument("--disk-probe-mib", type=int, default=None)
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--update-readme", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--combine", nargs="+", default=None, help="report from earlier JSONs")
    ap.add_argument("--command-line", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--contender", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import ooc_contenders as oc

    data_dir = Path(args.data_dir) if args.data_dir else oc.DATA_DIR
    args.data_dir = str(data_dir)
    if args.worker:
        return worker(args)

    from run_stitch import cpu_state, machine_info

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-ooc"
    if args.combine:
        results = combine(args.combine, args)
        stamp += "-combined"
    else:
        stamp += "-quick" if args.quick else ""
        if args.contenders == "default":
            cnames = list(DEFAULT)
        elif args.contenders == "all":
            cnames = list(ORDER)
        else:
            cnames = [c.strip() for c in args.contenders.split(",") if c.strip()]
        for c in cnames:
            if c not in oc.CONTENDERS:
                ap.error(f"unknown contender {c!r}; choices: {', '.join(oc.CONTENDERS)}")
        if args.scale_only:
            cnames = []
        main_w = "quick" if args.quick else "full"
        big_w = "quick-x4" if args.quick else "x4"
        plan = [(c, main_w) for c in cnames]
        if not args.no_scale:
            plan.append(("tilewise", big_w))
        tmp = out_dir / f"{stamp}.parts"
        tmp.mkdir(exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), str(HERE.parent / "src"), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        given = list(sys.argv[1:] if argv is None else argv)
        disk = None
        results = {
            "started": dt.datetime.now().isoformat(timespec="seconds"),
            "command": args.command_line or " ".join(["python bench/run_ooc.py", *given]),
            "quick": args.quick,
            "reps": args.reps,
            "machine": machine_info(),
            "data_dir": str(data_dir),
            "cpu_state_before": cpu_state(),
            "disk": disk,
            "records": [],
            "workloads": workload_info(list(dict.fromkeys(w for _, w in plan)), disk),
        }
        for c, w in plan:
            src_state = source_state()
            rec = run_one(c, w, args, env, data_dir, tmp)
            rec["source"] = src_state
            rec["command"] = results["command"]
            rec["started"] = results["started"]
            results["records"].append(rec)
            (out_dir / f"{stamp}.json").write_text(json.dumps(results, indent=1))
        results["cpu_state_after"] = cpu_state()
        # after the contenders: its 6 GiB of fsynced writes and page cache slowed the first
        # contender after it by up to a fifth
        if not args.no_disk_probe:
            mib = args.disk_probe_mib or (256 if args.quick else 2048)
            log(f"disk probe ({mib} MiB, fsync) in {data_dir} ...")
            disk = disk_probe(data_dir, mib, 3)
            log(f"  write with fsync {disk['write_fsync_GBps']:.2f} GB/s")
            results["disk"] = disk
            results["workloads"] = workload_info(list(dict.fromkeys(w for _, w in plan)), disk)
    md = markdown(results)
    (out_dir / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    (out_dir / f"{stamp}.md").write_text(md)
    have = {(r["workload"], r["contender"]) for r in results["records"]}
    complete = {(c, "full") for c in DEFAULT} | {("tilewise", "x4")}
    complete = {(w, c) for c, w in complete}
    upd = args.update_readme == "yes" or (args.update_readme == "auto" and complete <= have)
    if upd:
        update_readme(md)
        log("README ooc results section rewritten")
    print(md)
    log(f"wrote {out_dir / (stamp + '.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
