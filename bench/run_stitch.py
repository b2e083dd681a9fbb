"""Run the stitching benchmark: bandwidth probe + every (workload, contender) in a fresh process.

Writes bench/results/<stamp>[-quick].json and .md; for full-size runs also rewrites the results
section of bench/README.md (between the results markers).

Examples:
  python bench/run_stitch.py                       # full size, all workloads and contenders
  python bench/run_stitch.py --quick               # tiny sizes, smoke test (< 1 min)
  python bench/run_stitch.py -w a,c -c tilewise_stream,naive,monai_swi_constant
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import contenders as cs
import workloads as wls

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START = "<!-- results:start -->"
END = "<!-- results:end -->"
MIB = 1 << 20
CONTENDED = 0.15  # cores used by other processes during a record's timed runs


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        info["mem_gib"] = round(kb / (1 << 20), 1)
    except (OSError, StopIteration):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def run_child(cmd: list[str], json_path: Path, timeout: float, env: dict) -> tuple[object, str]:
    """Run a child; return (its JSON, "") or (partial JSON or None, why it failed)."""
    why = ""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            why = f"process died rc={p.returncode}: {' | '.join(tail)}"[:300]
    except subprocess.TimeoutExpired:
        why = f"timeout after {timeout:.0f} s"
    data = None
    if json_path.exists():
        with open(json_path) as f:
            data = json.load(f)
    return data, why


# ---------------------------------------------------------------------------------------------
# report


def _s(v: float | None) -> str:
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


def summarise(rec: dict, bound: float | None) -> dict:
    """Reduce one worker record to table cells."""
    row = {
        "contender": rec["contender"],
        "status": rec["status"],
        "batch": rec.get("batch"),
        "note": "",
        "best": None,
    }
    runs = rec.get("runs", [])
    notes = [runs[0]["note"]] if runs else []
    if runs:
        row["windows"] = runs[0]["windows"]
        if runs[0]["windows"] != rec["expected_windows"]:
            notes.append(f"{runs[0]['windows']} windows vs {rec['expected_windows']} expected")
        row["max_err"] = max(r["check"]["max_err"] or 0.0 for r in runs)
        row["n_bad"] = max(r["check"]["n_bad"] or 0 for r in runs)
        row["peak"] = max(r["peak_rss"] for r in runs)
        row["base"] = runs[0]["base_rss"]
        row["added"] = max(0, *(r["peak_rss"] - r["base_rss"] for r in runs))
        if not all(r.get("hwm_reset") for r in runs):
            notes.append("RSS high-water could not be reset: peak includes warm-up")
        contention = (rec.get("foreign_cores") or 0.0) + (rec.get("steal_cores") or 0.0)
        if contention > CONTENDED:
            notes.append(f"contended: other processes used {contention:.2f} cores")
        if any(r["check"].get("out_dtype") not in ("float32",) for r in runs):
            notes.append(f"out dtype {runs[0]['check'].get('out_dtype')}")
    row["warmup"] = rec.get("warmup_s")
    if rec["status"] == "ok":
        best = min(runs, key=lambda r: r["total"])
        ph = best["phases"]
        row["best"] = best["total"]
        row["first"] = runs[0]["total"]
        row["model"] = ph.get("model")
        if rec.get("fused"):
            row["extract"] = "(fused)"
            fused = ph.get("fused", 0.0) - ph.get("model", 0.0)
            row["stitch"] = f"{_s(fused)} (ext+stitch)"
        else:
            row["extract"] = _s(ph.get("extract"))
            row["stitch"] = _s(ph.get("stitch"))
        row["ratio"] = best["total"] / bound if bound else None
        row["reps"] = len(runs)
    elif rec["status"] == "WRONG":
        notes.insert(0, f"**WRONG**: {rec.get('error', '')}")
    else:
        stage = rec.get("error_stage", "")
        notes.insert(0, f"**error** ({stage}): {rec.get('error', '')}")
    row["note"] = "; ".join(n for n in notes if n).replace("|", "/")
    return row


def markdown(results: dict) -> str:
    bw = results["bandwidth"]
    lines = []
    m = results["machine"]
    lines.append(
        f"Run {results['started']} ({'QUICK sizes' if results['quick'] else 'full size'}), "
        f"`{results['command']}`, {results['reps']} reps per "
        + ("fresh process." if results.get("processes") == "fresh" else "record, ONE process.")
    )
    lines.append("")
    lines.append(
        f"Machine: {m.get('cpu')}, {m.get('cpus')} CPUs, {m.get('mem_gib')} GiB RAM, "
        f"Python {m.get('python')}, torch {m.get('torch')} ({m.get('torch_threads')} threads), "
        f"{m.get('platform')}."
    )
    vers = {}
    for wl in results["workloads"].values():
        for rec in wl["records"]:
            vers.update(rec.get("versions") or {})
    if vers:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(vers.items())) + ".")
    lines.append("")
    if bw:
        lines.append(
            f"Memory bandwidth ({bw['buffer_mib']} MiB buffers, median of {bw['reps']}): "
            f"copy {bw['copy_GBps']:.2f} GB/s (read+write), first touch "
            f"{bw['first_touch_GBps']:.2f} GB/s (written), copy into fresh memory "
            f"{bw['fresh_copy_GBps']:.2f} GB/s (read+write)."
        )
    else:
        lines.append("Memory bandwidth: probe failed; no bound.")
    lines.append("")
    before = results.get("cpu_state_before", {})
    after = results.get("cpu_state_after", {})
    omp = bw.get("omp_region_us") if bw else None
    lines.append(
        f"CPU state: load average before {before.get('loadavg')}, after {after.get('loadavg')}"
        + (f"; OpenMP parallel-region cost {omp:.0f} us" if omp is not None else "")
        + "."
    )
    if omp is not None and omp > 1000:
        lines.append("")
        lines.append(
            f"**Warning: a small multi-threaded torch op took {omp / 1000:.1f} ms (tens of us "
            "on an idle machine): the cores were contended during this run, so every torch "
            "call paid milliseconds and the timings below are not trustworthy.**"
        )
    worst = max(
        (
            (r.get("foreign_cores") or 0.0) + (r.get("steal_cores") or 0.0)
            for wl in results["workloads"].values()
            for r in wl["records"]
        ),
        default=0.0,
    )
    if worst > CONTENDED:
        lines.append("")
        lines.append(
            f"**Warning: other processes used up to {worst:.2f} cores while contenders ran "
            "(see `contended` notes); rerun on an idle machine for trustworthy timings.**"
        )
    if results.get("processes") == "one":
        lines.append("")
        lines.append(
            "**All contenders ran in ONE process (`--processes one`, the --quick default): "
            "RSS columns are per timed run (high-water reset) but not from a fresh process.**"
        )
    lines.append("")
    lines.append(
        "| workload | windows | input | windows written | window outputs read "
        "| output (fresh) | output r+w | bound (s) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, wl in results["workloads"].items():
        b = wl["bytes"]
        gb = {k: f"{v / 1e9:.3f} GB" for k, v in b.items()}
        lines.append(
            f"| {name}: {wl['description']} | {wl['windows']} | {gb['input_read']} "
            f"| {gb['windows_written']} | {gb['window_outputs_read']} | {gb['output_fresh']} "
            f"| {gb['output_rw']} | {_s(wl['bound_s'])} |"
        )
    lines.append("")
    lines.append(
        "Times in seconds (wall). `total` = best of the reps, phases from that rep; `first` = "
        "first full-size run after the warm-up; `warm-up` = one run on a tiny input first "
        "(JIT / first calls). RSS in MiB: `peak` = ru_maxrss of the fresh process (high-water "
        "reset before each timed run), `base` = RSS just before the timed section, "
        "`added` = peak - base. `max err` = max |out - 2x|; above 1e-4 a result is WRONG and "
        "not timed or ranked. `x bound` = total / memory-bandwidth bound."
    )
    lines.append("")
    hdr = (
        "| workload | # | contender | status | windows | batch | extract | model | stitch | total "
        "| first | warm-up | peak | base | added | max err | x bound | note |"
    )
    lines.append(hdr)
    lines.append("|" + "---|" * (hdr.count("|") - 1))
    for name, wl in results["workloads"].items():
        rows = [summarise(r, wl["bound_s"]) for r in wl["records"]]
        order = {"ok": 0, "WRONG": 1}
        rows.sort(key=lambda r: (order.get(r["status"], 2), r["best"] or 0.0))
        rank = 0
        for r in rows:
            ok = r["status"] == "ok"
            rank += ok
            lines.append(
                "| "
                + " | ".join(
                    [
                        name,
                        str(rank) if ok else "-",
                        r["contender"],
                        r["status"],
                        str(r.get("windows", "-")),
                        str(r.get("batch", "-")),
                        r.get("extract", "-") if ok else "-",
                        _s(r.get("model")) if ok else "-",
                        r.get("stitch", "-") if ok else "-",
                        _s(r.get("best")) if ok else "-",
                        _s(r.get("first")) if ok else "-",
                        _s(r.get("warmup")),
                        _mib(r.get("peak")),
                        _mib(r.get("base")),
                        _mib(r.get("added")),
                        _e(r.get("max_err")),
                        f"{r['ratio']:.1f}" if ok and r.get("ratio") else "-",
                        r["note"],
                    ]
                )
                + " |"
            )
    lines.append("")
    lines.append("Targets (tilewise_stream, the streaming path inference uses):")
    lines.append("")
    lines.extend(targets(results))
    return "\n".join(lines) + "\n"


def targets(results: dict) -> list[str]:
    """The suite's targets, judged from this run: faster than every peer (at least 2x the
    fastest on b), within 3x of the bandwidth bound, and tilewise's added memory at most the
    output + one batch (input and output windows) + 10 %."""

    def mark(ok: bool) -> str:
        return "met" if ok else "**NOT met**"

    out = []
    for name, wl in results["workloads"].items():
        rows = {r["contender"]: summarise(r, wl["bound_s"]) for r in wl["records"]}
        tw = rows.get("tilewise_stream")
        if not tw or tw["status"] != "ok":
            out.append(f"- {name}: tilewise_stream has no correct result.")
            continue
        parts = []
        peers = [r for c, r in rows.items() if not c.startswith("tilewise") and r["status"] == "ok"]
        if peers:
            fastest = min(peers, key=lambda r: r["best"])
            speedup = fastest["best"] / tw["best"]
            ok = speedup >= 2.0 if name == "b" else speedup > 1.0
            parts.append(
                f"fastest peer {fastest['contender']} {_s(fastest['best'])} s / tilewise "
                f"{_s(tw['best'])} s = {speedup:.2f}x (target {'>= 2x' if name == 'b' else '> 1x'}"
                f": {mark(ok)})"
            )
        if tw.get("ratio"):
            parts.append(f"{tw['ratio']:.1f}x the bound (target <= 3x: {mark(tw['ratio'] <= 3)})")
        wk = wls.get(name, results["quick"])
        win_in = wk.batch * math.prod(wk.window) * wk.shape[1] * 4
        win_out = win_in * wls.C_OUT // wk.shape[1]
        need = wl["bytes"]["output_fresh"] + win_in + win_out
        # the suite's model, torch.cat([2 * x, 2 * x], 1), makes two input-sized temporaries
        # besides its output, and the loop still holds the previous output while it runs
        model = 2 * win_in + win_out
        added = tw.get("added") or 0
        parts.append(
            f"added memory {added / MIB:.0f} MiB vs output + one batch {need / MIB:.0f} MiB "
            f"+ 10 % ({added / need:.2f}x: {mark(added <= 1.1 * need)}; counting the model's "
            f"own {model / MIB:.0f} MiB of temporaries and previous output, "
            f"{added / (need + model):.2f}x: {mark(added <= 1.1 * (need + model))})"
        )
        out.append(f"- {name}: " + "; ".join(parts) + ".")
    return out


def update_readme(text: str) -> None:
    body = README.read_text()
    if START not in body or END not in body:
        body = body.rstrip() + f"\n\n## Results\n\n{START}\n{END}\n"
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{text}{END}{tail}")


# ---------------------------------------------------------------------------------------------


def cpu_state() -> dict:
    out: dict = {}
    try:
        with open("/proc/loadavg") as f:
            out["loadavg"] = [float(v) for v in f.read().split()[:3]]
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/pressure/cpu") as f:
            out["cpu_pressure_some_avg10"] = float(f.readline().split()[1].split("=")[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def error_record(w: str, c: str, wl: wls.Workload, err: str) -> dict:
    return {
        "workload": w,
        "contender": c,
        "status": "error",
        "error": err,
        "error_stage": "process",
        "batch": wl.batch,
        "expected_windows": wls.n_windows(wl),
        "runs": [],
    }


def _progress(rec: dict, secs: float | None) -> None:
    best = min((r["total"] for r in rec.get("runs", [])), default=None)
    msg = rec["status"] + (f" best {best:.3f}s" if best is not None else "")
    if rec["status"] != "ok":
        msg += f" {rec.get('error', '')}"[:160]
    took = f" ({secs:.1f}s)" if secs is not None else ""
    print(
        f"[bench] {rec['workload']} {rec['contender']:20s} {msg}{took}",
        file=sys.stderr,
        flush=True,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("-w", "--workloads", default="a,b,c", help="comma list of a,b,c")
    ap.add_argument(
        "-c",
        "--contenders",
        default="all",
        help="comma list, or 'all'; choices: " + ",".join(cs.CONTENDERS),
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--processes",
        choices=["auto", "fresh", "one"],
        default="auto",
        help="fresh: one process per (workload, contender); one: everything in one process "
        "(fast smoke test; RSS not per fresh process); auto: one with --quick, else fresh",
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per process")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument(
        "--update-readme",
        choices=["auto", "yes", "no"],
        default="auto",
        help="rewrite README results (auto: only for full-size runs with all contenders)",
    )
    ap.add_argument("--bandwidth-mib", type=int, default=None)
    args = ap.parse_args(argv)

    wnames = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in wnames:
        if w not in wls.FULL:
            ap.error(f"unknown workload {w!r}")
    if args.contenders == "all":
        cnames = list(cs.CONTENDERS)
    else:
        cnames = [c.strip() for c in args.contenders.split(",") if c.strip()]
        for c in cnames:
            if c not in cs.CONTENDERS:
                ap.error(f"unknown contender {c!r}")
    one = args.processes == "one" or (args.processes == "auto" and args.quick)
    timeout = args.timeout or (300.0 if args.quick else 1800.0)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    tmp = out_dir / f"{stamp}.parts"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(HERE.parent / "src"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    py = sys.executable
    given = list(sys.argv[1:] if argv is None else argv)
    cmd_line = " ".join(["bash bench/run.sh", *given])
    common = ["--reps", str(args.reps)] + (["--quick"] if args.quick else [])
    if args.threads:
        common += ["--threads", str(args.threads)]

    results = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "command": cmd_line,
        "quick": args.quick,
        "reps": args.reps,
        "processes": "one" if one else "fresh",
        "machine": machine_info(),
        "cpu_state_before": cpu_state(),
        "workloads": {},
    }

    print("[bench] bandwidth probe ...", file=sys.stderr, flush=True)
    mib = args.bandwidth_mib or (64 if args.quick else 512)
    bw_json = tmp / "bandwidth.json"
    bw_cmd = [py, str(HERE / "bandwidth.py"), "--mib", str(mib), "--json", str(bw_json)]
    bw, err = run_child(bw_cmd, bw_json, timeout, env)
    if bw is None:
        print(f"[bench] bandwidth probe failed: {err}", file=sys.stderr)
    else:
        print(
            f"[bench]   copy {bw['copy_GBps']:.2f} GB/s, first touch "
            f"{bw['first_touch_GBps']:.2f} GB/s, OpenMP region {bw['omp_region_us']:.0f} us",
            file=sys.stderr,
        )
    results["bandwidth"] = bw

    for w in wnames:
        wl = wls.get(w, args.quick)
        bound = wls.bound_seconds(wl, bw["copy_GBps"], bw["first_touch_GBps"]) if bw else None
        results["workloads"][w] = {
            "description": wl.description,
            "shape": list(wl.shape),
            "window": list(wl.window),
            "step": list(wl.step),
            "batch": wl.batch,
            "windows": wls.n_windows(wl),
            "bytes": wls.min_bytes(wl),
            "bound_s": bound,
            "records": [],
        }

    harness = [py, str(HERE / "harness.py")]
    if one:
        jp = tmp / "all.json"
        cmd = [*harness, "--workload", ",".join(wnames), "--contender", ",".join(cnames)]
        t0 = time.perf_counter()
        recs, err = run_child([*cmd, *common, "--json", str(jp)], jp, timeout, env)
        got = {(r["workload"], r["contender"]): r for r in recs or []}
        for w in wnames:
            wl = wls.get(w, args.quick)
            for c in cnames:
                rec = got.get((w, c)) or error_record(w, c, wl, err or "not run")
                results["workloads"][w]["records"].append(rec)
                _progress(rec, None)
        print(f"[bench] one process: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    else:
        for w in wnames:
            wl = wls.get(w, args.quick)
            for c in cnames:
                jp = tmp / f"{w}-{c}.json"
                cmd = [*harness, "--workload", w, "--contender", c, *common, "--json", str(jp)]
                t0 = time.perf_counter()
                recs, err = run_child(cmd, jp, timeout, env)
                rec = recs[0] if recs else error_record(w, c, wl, err)
                results["workloads"][w]["records"].append(rec)
                _progress(rec, time.perf_counter() - t0)
    results["cpu_state_after"] = cpu_state()

    md = markdown(results)
    (out_dir / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    (out_dir / f"{stamp}.md").write_text(md)
    full_set = set(wnames) == set(wls.FULL) and set(cnames) == set(cs.CONTENDERS)
    upd = args.update_readme == "yes" or (
        args.update_readme == "auto" and not args.quick and full_set and not one
    )
    if upd:
        update_readme(md)
        print("[bench] README results section rewritten", file=sys.stderr)
    print(md)
    print(f"[bench] wrote {out_dir / (stamp + '.json')} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
