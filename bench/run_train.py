"""Run the training-window (cleaning) benchmark: the paper's Table 2 scenario.

Each contender cuts a sparsely labelled volume into windows and keeps the (image, label) pairs
of windows holding a labelled voxel. Every contender runs in a fresh process (full size) and
is timed first run and best of ``--reps``, with peak RSS; its kept windows are checked against
an independent reference and against tilewise's. Writes bench/results/<stamp>-train[-quick].json
and .md; a full-size run with every contender also rewrites the training results section of
bench/README.md (between the train-results markers).

Examples:
  python bench/run_train.py                       # full size, every contender
  python bench/run_train.py --quick               # small size, one process (smoke test)
  python bench/run_train.py -c tilewise,naive     # a subset
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

import harness as hs
import train_contenders as tc
from contenders import Timer
from run_stitch import CONTENDED, _mib, _s, cpu_state, machine_info, run_child

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START = "<!-- train-results:start -->"
END = "<!-- train-results:end -->"
MIB = 1 << 20
TARGET_S = 0.5  # tilewise best total
TARGET_SPEEDUP = 5.0  # over every peer
TARGET_MEM = 1.25  # peak data memory / (input + labels + kept windows)


# ---------------------------------------------------------------------------------------------
# worker: one or more contenders in this process


def _window(batch, i: int) -> torch.Tensor:
    w = batch[i]
    return w if isinstance(w, torch.Tensor) else torch.from_numpy(w)


def _nbytes(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.numel() * batch.element_size()
    if isinstance(batch, list):
        return sum(_nbytes(b) for b in batch)
    return int(batch.nbytes)


def _dtype(batch) -> str:
    d = batch.dtype if hasattr(batch, "dtype") else batch[0].dtype
    return str(d).replace("torch.", "")


def starts_digest(starts) -> str:
    text = json.dumps(sorted([list(s) for s in starts]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check(out: tc.TrainOut, image, labels, sc: tc.Scenario, refs: dict) -> dict:
    """Compare the kept windows with the reference of the contender's geometry, by position
    and by content (image and label of every kept window), one window at a time."""
    if out.geometry not in refs:
        refs[out.geometry] = tc.reference(labels, sc, out.geometry)
    ref = refs[out.geometry]
    w = sc.window
    k = len(out.image)
    res: dict = {
        "geometry": out.geometry,
        "total": out.total,
        "kept": k,
        "ref_total": ref["total"],
        "ref_kept": len(ref["kept_starts"]),
        "labelled": ref["labelled"],
        "image_dtype": _dtype(out.image) if k else None,
        "label_dtype": _dtype(out.labels) if k else None,
        "kept_bytes": (_nbytes(out.image) + _nbytes(out.labels)) if k else 0,
        "starts_reported": out.starts is not None,
    }
    problems = []
    if len(out.labels) != k:
        problems.append(f"{len(out.labels)} label windows vs {k} image windows")
    if out.total != ref["total"]:
        problems.append(f"total {out.total} != {ref['total']}")
    starts = out.starts
    if starts is None:  # the library does not say which windows it kept: assume raster order
        starts = ref["kept_starts"] if k == len(ref["kept_starts"]) else None
    if starts is None:
        problems.append(f"kept {k} != reference {len(ref['kept_starts'])}, positions unknown")
    else:
        starts = [tuple(int(v) for v in s) for s in starts]
        if len(starts) != k:
            problems.append(f"{len(starts)} positions for {k} windows")
        if len(set(starts)) != len(starts):
            problems.append("a window kept twice")
        if set(starts) != set(ref["kept_starts"]):
            miss = len(set(ref["kept_starts"]) - set(starts))
            extra = len(set(starts) - set(ref["kept_starts"]))
            problems.append(f"kept set differs from the reference: {miss} missing, {extra} extra")
        res["digest"] = starts_digest(starts)
    occ, bad_img, bad_lab = 0, 0, 0
    spatial = sc.spatial
    for i, st in enumerate(starts or []):
        if i >= k or i >= len(out.labels):
            break
        src = tuple(slice(s, min(s + w, d)) for s, d in zip(st, spatial, strict=True))
        inside = tuple(slice(0, sl.stop - sl.start) for sl in src)
        wi = _window(out.image, i).reshape(image.shape[1], w, w, w)
        wl = _window(out.labels, i).reshape(w, w, w)
        if not torch.equal(wi[(slice(None), *inside)], image[(0, slice(None), *src)]):
            bad_img += 1
        lab_in = wl[inside]
        if not torch.equal(lab_in.to(torch.int64), labels[(0, *src)].to(torch.int64)):
            bad_lab += 1
        n_in = int((lab_in >= 0).sum())
        n_all = int((wl >= 0).sum())
        if n_all != n_in:  # padding must read as unlabelled
            bad_lab += 1
        occ += n_in
    if bad_img:
        problems.append(f"{bad_img} image windows differ from the input")
    if bad_lab:
        problems.append(f"{bad_lab} label windows differ from the labels")
    res["occurrences"] = occ
    res["duplication_rate"] = occ / ref["labelled"] if ref["labelled"] else 0.0
    if out.dup is not None:
        res["duplication_reported"] = out.dup
        if abs(out.dup - res["duplication_rate"]) > 1e-9:
            problems.append(f"reported duplication {out.dup:.4f} != {res['duplication_rate']:.4f}")
    if out.kept_reported is not None and out.kept_reported != k:
        problems.append(f"reported kept {out.kept_reported} != {k} windows returned")
    res["ok"] = not problems
    res["why"] = "; ".join(problems)
    return res


def run_once(c: tc.TrainContender, image, labels, sc: tc.Scenario, refs: dict) -> dict:
    tm = Timer()
    gc.collect()
    reset_ok = hs.reset_hwm()
    base = hs.rss_bytes()
    t0 = time.perf_counter()
    out = c.run(image, labels, sc, tm)
    total = time.perf_counter() - t0
    peak = hs.maxrss_bytes()
    rec = {
        "total": total,
        "phases": tm.phases,
        "base_rss": base,
        "peak_rss": peak,
        "hwm_reset": reset_ok,
        "note": out.note,
    }
    rec["check"] = check(out, image, labels, sc, refs)
    if out.report is not None:
        rec["report"] = out.report
    del out
    return rec


def run_contender(name: str, quick: bool, reps: int, state: dict) -> dict:
    """Import, warm up and time one contender; never raises. ``state`` caches the inputs."""
    wall0 = time.perf_counter()
    sc = tc.get(quick)
    c = tc.CONTENDERS[name]
    rec: dict = {
        "contender": name,
        "quick": quick,
        "scenario": sc.description,
        "shape": list(sc.shape),
        "window": sc.window,
        "step": sc.step,
        "border": sc.border,
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": hs.loadavg(),
        "status": "error",
        "runs": [],
    }
    stage = "import"
    try:
        t0 = time.perf_counter()
        tc.setup(name)
        rec["import_s"] = time.perf_counter() - t0
        gc.collect()
        gc.freeze()
        rec["versions"] = versions(c)
        stage = "warm-up"
        wimg, wlab = tc.make_image(tc.WARM, seed=1), tc.make_labels(tc.WARM)
        t0 = time.perf_counter()
        wout = c.run(wimg, wlab, tc.WARM, Timer())
        rec["warmup_s"] = time.perf_counter() - t0
        rec["warmup_check"] = check(wout, wimg, wlab, tc.WARM, {})
        del wout, wimg, wlab
        stage = "input"
        if "image" not in state:
            state["rss_before_input"] = hs.rss_bytes()
            state["image"] = tc.make_image(sc)
            state["labels"] = tc.make_labels(sc)
            state["refs"] = {}
        image, labels, refs = state["image"], state["labels"], state["refs"]
        rec["input_bytes"] = image.numel() * image.element_size()
        rec["labels_bytes"] = labels.numel() * labels.element_size()
        rec["rss_before_input"] = state["rss_before_input"]
        stage = "reference"
        if "clamp" not in refs:
            refs["clamp"] = tc.reference(labels, sc, "clamp")
        rec["reference"] = {
            k: v for k, v in refs["clamp"].items() if k not in ("kept_starts", "geometry")
        }
        rec["reference"]["kept"] = len(refs["clamp"]["kept_starts"])
        rec["reference"]["digest"] = starts_digest(refs["clamp"]["kept_starts"])
        busy0, steal0 = hs.cpu_ticks()
        own0, wall_t0 = hs.own_cpu(), time.perf_counter()
        check_s = 0.0
        for i in range(reps):
            stage = f"run {i + 1}"
            t0 = time.perf_counter()
            rec["runs"].append(run_once(c, image, labels, sc, refs))
            check_s += time.perf_counter() - t0 - rec["runs"][-1]["total"]
            if not rec["runs"][-1]["check"]["ok"]:
                break  # a wrong result is reported, not timed further
        busy1, steal1 = hs.cpu_ticks()
        span = time.perf_counter() - wall_t0
        # CPU used by OTHER processes while the runs went on (checks are single-threaded work
        # of this process, counted in own_cpu)
        foreign = max(0.0, (busy1 - busy0) - (hs.own_cpu() - own0))
        rec["foreign_cores"] = foreign / span if span > 0 else None
        rec["steal_cores"] = (steal1 - steal0) / span if span > 0 else None
        rec["check_s"] = check_s
        last = rec["runs"][-1]["check"]
        if last["ok"]:
            rec["status"] = "ok"
        else:
            rec["status"] = "WRONG"
            rec["error"] = last["why"]
    except Exception as e:
        msg = str(e).strip().splitlines()
        rec["error"] = f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]
        rec["error_stage"] = stage
        rec["traceback"] = traceback.format_exc()[-4000:]
    rec["wall_s"] = time.perf_counter() - wall0
    return rec


def versions(c: tc.TrainContender) -> dict:
    from importlib import metadata

    out = {"torch": torch.__version__, "python": sys.version.split()[0]}
    dist = {"monai.inferers": "monai"}
    for m in c.modules:
        name = dist.get(m, m)
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            mod = sys.modules.get(m.split(".")[0])
            out[name] = getattr(mod, "__version__", "source tree")
    return out


def worker(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out, state = [], {}
    for n in args.contenders.split(","):
        out.append(run_contender(n, args.quick, args.reps, state))
        with open(args.json, "w") as f:  # rewritten after each record: partial results survive
            json.dump(out, f, indent=1)
    return 0


# ---------------------------------------------------------------------------------------------
# report


def summarise(rec: dict) -> dict:
    row = {"contender": rec["contender"], "status": rec["status"], "best": None, "note": ""}
    runs = rec.get("runs", [])
    notes = [runs[0]["note"]] if runs else []
    if runs:
        ck = runs[0]["check"]
        row.update(
            geometry=ck["geometry"],
            total_w=ck["total"],
            kept=ck["kept"],
            dup=ck["duplication_rate"],
            digest=ck.get("digest"),
            kept_bytes=ck["kept_bytes"],
            label_dtype=ck["label_dtype"],
        )
        row["peak"] = max(r["peak_rss"] for r in runs)
        row["base"] = runs[0]["base_rss"]
        row["added"] = max(0, *(r["peak_rss"] - r["base_rss"] for r in runs))
        data = rec["input_bytes"] + rec["labels_bytes"]
        row["data_peak"] = data + row["added"]
        row["data_min"] = data + ck["kept_bytes"]
        row["mem_ratio"] = row["data_peak"] / row["data_min"]
        if ck["geometry"] == "pad":
            notes.append(f"pads instead of stepping back: {ck['kept']} kept on its own grid")
        if not ck["starts_reported"]:
            notes.append("positions not returned: matched to the reference by content")
        if not all(r.get("hwm_reset") for r in runs):
            notes.append("RSS high-water could not be reset: peak includes warm-up")
        contention = (rec.get("foreign_cores") or 0.0) + (rec.get("steal_cores") or 0.0)
        if contention > CONTENDED:
            notes.append(f"contended: other processes used {contention:.2f} cores")
    row["warmup"] = rec.get("warmup_s")
    if rec["status"] == "ok":
        best = min(runs, key=lambda r: r["total"])
        row["best"] = best["total"]
        row["first"] = runs[0]["total"]
        row["phases"] = ", ".join(f"{k} {_s(v)}" for k, v in best["phases"].items())
        row["reps"] = len(runs)
    elif rec["status"] == "WRONG":
        notes.insert(0, f"**WRONG**: {rec.get('error', '')}")
    else:
        notes.insert(0, f"**error** ({rec.get('error_stage', '')}): {rec.get('error', '')}")
    row["note"] = "; ".join(n for n in notes if n).replace("|", "/")
    return row


def markdown(results: dict) -> str:
    m = results["machine"]
    recs = results["records"]
    rows = [summarise(r) for r in recs]
    tw = next((r for r in rows if r["contender"] == "tilewise" and r["status"] == "ok"), None)
    tw_rec = next((r for r in recs if r["contender"] == "tilewise"), None)
    ref = next((r["reference"] for r in recs if r.get("reference")), None)
    lines = [
        f"Run {results['started']} ({'QUICK size' if results['quick'] else 'full size'}), "
        f"`{results['command']}`, {results['reps']} reps per "
        + ("fresh process." if results["processes"] == "fresh" else "record, ONE process."),
        "",
        f"Machine: {m.get('cpu')}, {m.get('cpus')} CPUs, {m.get('mem_gib')} GiB RAM, "
        f"Python {m.get('python')}, torch {m.get('torch')} ({m.get('torch_threads')} threads), "
        f"{m.get('platform')}.",
    ]
    vers: dict = {}
    for r in recs:
        vers.update(r.get("versions") or {})
    if vers:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(vers.items())) + ".")
    before, after = results.get("cpu_state_before", {}), results.get("cpu_state_after", {})
    if before.get("loadavg"):
        lines.append(
            f"CPU state: load average {before['loadavg'][0]:.2f} before, "
            f"{after.get('loadavg', ['?'])[0]} after."
        )
    lines.append("")
    lines.append(f"Scenario: {results['scenario']}.")
    if ref:
        cls = ", ".join(f"class {k}: {v}" for k, v in sorted(ref["classes"].items()))
        lines.append(
            f"Reference (from the labelled voxels' coordinates, independent of every "
            f"contender): {ref['total']} windows, {ref['kept']} kept, {ref['labelled']} "
            f"labelled voxels ({cls}), duplication rate "
            f"{ref['occurrences'] / ref['labelled']:.2f}."
        )
    if results["processes"] == "one":
        lines += [
            "",
            "**All contenders ran in ONE process (`--processes one`, the --quick default): "
            "RSS columns are per timed run (high-water reset) but not from a fresh process.**",
        ]
    worst = max(
        ((r.get("foreign_cores") or 0.0) + (r.get("steal_cores") or 0.0) for r in recs),
        default=0.0,
    )
    if worst > CONTENDED:
        lines += [
            "",
            f"**Warning: other processes used up to {worst:.2f} cores while contenders ran "
            "(see `contended` notes); rerun on an idle machine for trustworthy timings.**",
        ]
    rep = next((r["report"] for r in (tw_rec or {}).get("runs", []) if r.get("report")), None)
    if rep:
        lines += ["", "tilewise's own report (`print(r.report)`):", "", "```", rep, "```"]
    lines += [
        "",
        "Times in seconds (wall): `total` = best of the reps, `phases` from that rep, `first` = "
        "first full-size run after the warm-up, `warm-up` = one run on a tiny volume first. "
        "`kept` = windows returned; `same` = the kept set equals tilewise's (`pad` = the peer "
        "pads the end instead of stepping back, so its last windows lie elsewhere; its kept set "
        "is checked against the reference of its own grid). `dup` = labelled-voxel "
        "occurrences in the kept label windows / labelled voxels (counted by the harness from "
        "each contender's output; tilewise's own figure must agree). RSS in MiB: `peak` = "
        "ru_maxrss (high-water reset before each run), `base` = RSS just before the run "
        "(imports + input + labels), `added` = peak - base. `x mem` = (input + labels + added) "
        "/ (input + labels + kept windows). `x tw` = total / tilewise's total.",
        "",
    ]
    hdr = (
        "| # | contender | status | windows | kept | same | dup | phases | total | first "
        "| warm-up | peak | base | added | x mem | x tw | note |"
    )
    lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    order = {"ok": 0, "WRONG": 1}
    rows.sort(key=lambda r: (order.get(r["status"], 2), r["best"] or 0.0))
    rank = 0
    for r in rows:
        ok = r["status"] == "ok"
        rank += ok
        same = "-"
        if tw and r.get("digest"):
            same = "yes" if r["digest"] == tw.get("digest") else r.get("geometry", "no")
            if same == "clamp":
                same = "**no**"
        x_tw = f"{r['best'] / tw['best']:.1f}" if ok and tw and tw["best"] else "-"
        cells = [
            str(rank) if ok else "-",
            r["contender"],
            r["status"],
            str(r.get("total_w", "-")),
            str(r.get("kept", "-")),
            same,
            f"{r['dup']:.2f}" if r.get("dup") is not None else "-",
            r.get("phases", "-") if ok else "-",
            _s(r.get("best")) if ok else "-",
            _s(r.get("first")) if ok else "-",
            _s(r.get("warmup")),
            _mib(r.get("peak")),
            _mib(r.get("base")),
            _mib(r.get("added")),
            f"{r['mem_ratio']:.2f}" if r.get("mem_ratio") else "-",
            x_tw,
            r["note"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *targets(rows, tw, tw_rec)]
    return "\n".join(lines) + "\n"


def targets(rows: list[dict], tw: dict | None, tw_rec: dict | None) -> list[str]:
    if not tw or not tw_rec:
        return ["Targets: tilewise did not produce a correct result; nothing to compare."]

    def mark(ok: bool) -> str:
        return "met" if ok else "**NOT met**"

    out = ["Targets:", ""]
    if tw_rec.get("quick"):
        out = [
            "Targets (they apply to the full size; at the quick size they are only a smoke test):",
            "",
        ]
    threads = tw_rec.get("torch_threads")
    out.append(
        f"- time: tilewise best {tw['best']:.3f} s ({threads} torch threads), target "
        f"< {TARGET_S} s: {mark(tw['best'] < TARGET_S)}."
    )
    peers = [r for r in rows if r["contender"] != "tilewise"]
    timed = [r for r in peers if r["status"] == "ok"]
    if timed:
        worst = min(timed, key=lambda r: r["best"])
        ratio = worst["best"] / tw["best"]
        speed = ", ".join(f"{r['contender']} {r['best'] / tw['best']:.1f}x" for r in timed)
        out.append(
            f"- speed-up over every peer (peer time / tilewise time), target >= "
            f"{TARGET_SPEEDUP:.0f}x: {speed}; fastest peer {worst['contender']} {ratio:.1f}x: "
            f"{mark(ratio >= TARGET_SPEEDUP)}."
        )
    failed = [r["contender"] for r in peers if r["status"] != "ok"]
    if failed:
        out.append(f"- peers without a correct timed result (not compared): {', '.join(failed)}.")
    inp, lab = tw_rec["input_bytes"], tw_rec["labels_bytes"]
    kept = tw["kept_bytes"]
    need = inp + lab + kept
    out.append(
        f"- memory: input {inp / MIB:.0f} MiB + labels {lab / MIB:.0f} MiB + kept windows "
        f"{kept / MIB:.0f} MiB = {need / MIB:.0f} MiB; budget +25% = "
        f"{TARGET_MEM * need / MIB:.0f} MiB; tilewise's data peak (input + labels + added "
        f"{tw['added'] / MIB:.0f} MiB) = {tw['data_peak'] / MIB:.0f} MiB, ratio "
        f"{tw['mem_ratio']:.2f} (target <= {TARGET_MEM}): {mark(tw['mem_ratio'] <= TARGET_MEM)}."
        f" Absolute peak RSS {tw['peak'] / MIB:.0f} MiB (imports included)."
    )
    return out


def update_readme(text: str) -> None:
    body = README.read_text()
    if START not in body or END not in body:
        body = body.rstrip() + f"\n\n### Training results\n\n{START}\n{END}\n"
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{text}{END}{tail}")


def error_record(c: str, err: str) -> dict:
    return {"contender": c, "status": "error", "error": err, "error_stage": "process", "runs": []}


def _progress(rec: dict, secs: float | None) -> None:
    best = min((r["total"] for r in rec.get("runs", [])), default=None)
    msg = rec["status"] + (f" best {best:.3f}s" if best is not None else "")
    if rec.get("runs"):
        ck = rec["runs"][0]["check"]
        msg += f" kept {ck['kept']}/{ck['total']}"
    if rec["status"] != "ok":
        msg += f" {rec.get('error', '')}"[:160]
    took = f" ({secs:.1f}s)" if secs is not None else ""
    print(f"[train] {rec['contender']:16s} {msg}{took}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small size (smoke test)")
    ap.add_argument(
        "-c",
        "--contenders",
        default="all",
        help="comma list, or 'all'; choices: " + ",".join(tc.CONTENDERS),
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--processes",
        choices=["auto", "fresh", "one"],
        default="auto",
        help="fresh: one process per contender; one: all in one process; auto: one with "
        "--quick, else fresh",
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per process")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument(
        "--update-readme",
        choices=["auto", "yes", "no"],
        default="auto",
        help="rewrite README training results (auto: only full-size runs with all contenders)",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.contenders == "all":
        cnames = list(tc.CONTENDERS)
    else:
        cnames = [c.strip() for c in args.contenders.split(",") if c.strip()]
        for c in cnames:
            if c not in tc.CONTENDERS:
                ap.error(f"unknown contender {c!r}")
    if args.worker:
        args.contenders = ",".join(cnames)
        return worker(args)

    sc = tc.get(args.quick)
    one = args.processes == "one" or (args.processes == "auto" and args.quick)
    timeout = args.timeout or (300.0 if args.quick else 900.0)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = (
        dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-train" + ("-quick" if args.quick else "")
    )
    tmp = out_dir / f"{stamp}.parts"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(HERE.parent / "src"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    given = list(sys.argv[1:] if argv is None else argv)
    common = ["--reps", str(args.reps)] + (["--quick"] if args.quick else [])
    if args.threads:
        common += ["--threads", str(args.threads)]
    results: dict = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python bench/run_train.py", *given]),
        "quick": args.quick,
        "reps": args.reps,
        "processes": "one" if one else "fresh",
        "scenario": sc.description,
        "machine": machine_info(),
        "cpu_state_before": cpu_state(),
        "records": [],
    }
    worker_cmd = [sys.executable, str(HERE / "run_train.py"), "--worker"]
    print(f"[train] {sc.description}", file=sys.stderr, flush=True)
    if one:
        jp = tmp / "all.json"
        t0 = time.perf_counter()
        cmd = [*worker_cmd, "-c", ",".join(cnames), *common, "--json", str(jp)]
        recs, err = run_child(cmd, jp, timeout * len(cnames), env)
        got = {r["contender"]: r for r in recs or []}
        for c in cnames:
            rec = got.get(c) or error_record(c, err or "not run")
            results["records"].append(rec)
            _progress(rec, None)
        print(f"[train] one process: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    else:
        for c in cnames:
            jp = tmp / f"{c}.json"
            t0 = time.perf_counter()
            recs, err = run_child(
                [*worker_cmd, "-c", c, *common, "--json", str(jp)], jp, timeout, env
            )
            rec = recs[0] if recs else error_record(c, err)
            if recs and err and rec["status"] == "ok":
                rec["status"], rec["error"] = "error", err
            results["records"].append(rec)
            _progress(rec, time.perf_counter() - t0)
    results["cpu_state_after"] = cpu_state()

    md = markdown(results)
    (out_dir / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    (out_dir / f"{stamp}.md").write_text(md)
    upd = args.update_readme == "yes" or (
        args.update_readme == "auto"
        and not args.quick
        and set(cnames) == set(tc.CONTENDERS)
        and not one
    )
    if upd:
        update_readme(md)
        print("[train] README training results section rewritten", file=sys.stderr)
    print(md)
    print(f"[train] wrote {out_dir / (stamp + '.json')} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
