"""The command line, run as users run it: the installed ``tilewise`` command in a subprocess.

Each subprocess spends about two seconds importing torch, so the commands that do not depend on
one another are started together when the module's data is made, and each test waits for its
own. Argument checks that need no files also run in-process through ``cli.main`` (fast).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import tilewise as tw

zarr = pytest.importorskip("zarr")
click = pytest.importorskip("click")

from tilewise import cli  # noqa: E402  (needs click)

SHAPE = (20, 24, 28)
TILING = ["--window", "12", "--step", "8"]
PREDICT = (
    "predict net.pt2 img.zarr pred.ome.zarr --window 12 --step 8 --border 2 --chunks 8 "
    "--block 8,8,16 --no-progress"
)

# Commands started together at module set-up (in the data folder); tests look them up by name.
COMMANDS = {
    "predict": PREDICT,
    "sample": "sample img.zarr lab.zarr train.zarr --window 12 --step 8 --border 2",
    "plan-input": "plan img.zarr --window 12 --step 8 --border 2 --chunks 8 --out-channels 2 "
    "--budget 1GiB --picture layout.png",
    "info": "info img.zarr",
    "demo-help": "demo --help",
    # bad arguments: exit code 2, one line on stderr
    "missing-input": "predict net.pt2 missing.zarr o1.zarr --window 12 --step 8",
    "bad-window": "predict net.pt2 img.zarr o2.zarr --window 12,x --step 8",
    "window-too-large": "predict net.pt2 img.zarr o3.zarr --window 64 --step 8",
    "unknown-blend": "predict net.pt2 img.zarr o4.zarr --window 12 --step 8 --blend foo",
    # credentials in URLs never printed; unreachable locations are bad input (exit 2)
    "secret-output": "predict net.pt2 img.zarr 'https://alice:s3cr3t@127.0.0.1:9/o.zarr' "
    "--window 12 --step 8 --no-progress",
    "secret-s3-input": "info 's3://KEYID:s3cr3t@bucket/x.zarr'",
    "unreachable-input": "info http://127.0.0.1:9/x.zarr",
}
# started as 'python -m tilewise.cli' (the other way to run it)
MODULE_COMMANDS = {
    "module-plan": "plan 236,720,510 --window 64 --step 32",
    "module-bad": "plan 10,10 --window 4 --step 0",
}


@dataclass
class Done:
    code: int
    out: str
    err: str


# one thread each: a dozen processes share two cores, and idle OpenMP threads spin
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# the console script that installing tilewise puts next to the interpreter
CONSOLE = Path(sys.executable).with_name("tilewise")


def command(line: str, *, module: bool = False) -> list[str]:
    """The real entry point, as ``tilewise <line>`` runs it (``python -m tilewise.cli <line>``
    with ``module=True``, or where the console script is not installed)."""
    if module or not CONSOLE.exists():
        return [sys.executable, "-m", "tilewise.cli", *shlex.split(line)]
    return [str(CONSOLE), *shlex.split(line)]


def run(cwd: Path, line: str) -> Done:
    p = subprocess.run(command(line), cwd=cwd, capture_output=True, text=True, timeout=300, env=ENV)
    return Done(p.returncode, p.stdout, p.stderr)


class Runs:
    """Subprocesses started together; ``[name]`` waits for one and returns its result."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        lines = {name: (line, False) for name, line in COMMANDS.items()}
        lines.update({name: (line, True) for name, line in MODULE_COMMANDS.items()})
        self.procs = {
            name: subprocess.Popen(
                command(line, module=module),
                cwd=cwd,
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, (line, module) in lines.items()
        }
        self.done: dict[str, Done] = {}

    def __getitem__(self, name: str) -> Done:
        if name not in self.done:
            proc = self.procs[name]
            out, err = proc.communicate(timeout=300)
            self.done[name] = Done(proc.returncode, out, err)
        return self.done[name]

    def close(self) -> None:
        """Stop and reap the commands no test waited for (when only some tests run)."""
        for name, proc in self.procs.items():
            if name not in self.done:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 2, 3, padding=1).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    img = zarr.create_array(root / "img.zarr", shape=SHAPE, chunks=(10, 12, 14), dtype="float32")
    img[...] = rng.random(SHAPE, dtype=np.float32)
    lab = np.full(SHAPE, -1, dtype=np.int16)
    lab[5, 6:12, 6:12] = 1
    lab[15, 3, 3:20] = 0
    zlab = zarr.create_array(root / "lab.zarr", shape=SHAPE, chunks=(10, 12, 14), dtype="int16")
    zlab[...] = lab
    batch = torch.export.Dim("batch")
    example = torch.zeros(2, 1, 12, 12, 12)
    program = torch.export.export(_net(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, root / "net.pt2")
    return root


@pytest.fixture(scope="module")
def runs(data: Path):
    started = Runs(data)
    yield started
    started.close()


def _volume(data: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(data / "img.zarr"))


def _counts(text: str) -> tuple[int, int]:
    m = re.search(r"(\d+) run, (\d+) skipped", text)
    assert m is not None, text
    return int(m.group(1)), int(m.group(2))


# -- predict ---------------------------------------------------------------------------------------
def test_predict_equals_library_and_resumes(data: Path, runs: Runs) -> None:
    first = runs["predict"]
    assert first.code == 0, first.err
    assert _counts(first.out) == (18, 0)  # 3 x 3 x 2 blocks of 8 x 8 x 16
    assert "pred.ome.zarr" in first.out
    out = tw.open_array(data / "pred.ome.zarr")
    assert out.info.format == "ome-zarr"  # the name ends in .ome.zarr
    assert out.chunks == (1, 2, 8, 8, 8)
    x = torch.from_numpy(_volume(data))[None, None]
    tiling = tw.Tiling(SHAPE, window=12, step=8)
    blend = tw.blend.border(2, weight=0.0)
    expected = tw.predict(_net(), x, tiling, blend=blend, device="cpu").numpy()
    np.testing.assert_allclose(out[...], expected, rtol=0, atol=1e-5)

    again = run(data, PREDICT)  # same arguments: every block was finished
    assert again.code == 0, again.err
    assert _counts(again.out) == (0, 18)
    np.testing.assert_array_equal(tw.open_array(data / "pred.ome.zarr")[...], out[...])


# -- sample ----------------------------------------------------------------------------------------
def test_sample_writes_the_kept_windows(data: Path, runs: Runs) -> None:
    done = runs["sample"]
    assert done.code == 0, done.err
    assert "Kept windows" in done.out
    assert "Data duplication rate" in done.out
    image = _volume(data)[None, None]
    labels = np.asarray(zarr.open_array(data / "lab.zarr"))[None]
    ref = tw.clean(image, labels, tw.Tiling(SHAPE, window=12, step=8), border=2, ignore=-1)
    assert ref.report.kept > 0
    assert f"wrote {ref.report.kept} windows" in done.out
    group = zarr.open_group(data / "train.zarr", mode="r")
    np.testing.assert_array_equal(group["image"][...], ref.image)
    np.testing.assert_array_equal(group["labels"][...], ref.labels)  # (K, *window): no channel
    starts = group["starts"][...]
    assert starts.dtype == np.int64
    np.testing.assert_array_equal(starts, [w.start for w in ref.windows])
    np.testing.assert_array_equal(group["images"][...], ref.images)
    assert group.attrs["kept"] == ref.report.kept
    assert group.attrs["total"] == ref.report.total == 18
    assert group.attrs["duplication_rate"] == pytest.approx(ref.report.duplication_rate)


def test_missing_model_file(data: Path) -> None:
    code, _, err = _in_process(
        ["predict", str(data / "no.pt2"), str(data / "img.zarr"), str(data / "o.zarr"), *TILING]
    )
    assert code == 2
    assert err.startswith("tilewise: error: model: expected an existing")
    assert len(err.strip().splitlines()) == 1


def test_model_exported_for_another_window(data: Path) -> None:
    # net.pt2 was exported for 12^3 windows: torch.export refuses 8^3 ones when called
    args = [str(data / f) for f in ("net.pt2", "img.zarr", "o8.zarr")]
    code, _, err = _in_process(["predict", *args, "--window", "8", "--step", "4"])
    assert code == 2, err
    assert err.startswith("tilewise: error: MODEL: expected a model that accepts windows of (8")
    assert len(err.strip().splitlines()) == 1


def test_sample_refuses_an_existing_output(data: Path, runs: Runs) -> None:
    assert runs["sample"].code == 0
    code, _, err = _in_process(
        ["sample", *(str(data / f) for f in ("img.zarr", "lab.zarr", "train.zarr")), *TILING]
    )
    assert code == 2
    assert "--overwrite" in err


# -- plan ------------------------------------------------------------------------------------------
def test_plan_counts_the_papers_windows() -> None:
    # in-process (pure arithmetic); 'plan-input' below runs plan through the entry point
    code, out, err = _in_process(["plan", "236,720,510", "--window", "64", "--step", "32"])
    assert code == 0, err
    assert re.search(r"windows per axis\s+\(7, 22, 15\)", out)
    assert re.search(r"^windows\s+2310$", out, re.M)
    dup = 2310 * 64**3 / (236 * 720 * 510)
    assert f"{dup:.2f}x" in out
    assert "device memory" in out
    assert "host memory" in out


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plan_reads_an_input_and_estimates_blocks(data: Path, runs: Runs) -> None:
    done = runs["plan-input"]
    assert done.code == 0, done.err
    assert re.search(r"^shape\s+\(20, 24, 28\)$", done.out, re.M)
    assert re.search(r"^windows\s+18$", done.out, re.M)
    t = tw.Tiling(SHAPE, window=12, step=8)
    p = tw.plan(
        t,
        out_channels=2,
        out=True,
        chunks=(8, 8, 8),
        blend=tw.blend.border(2, weight=0.0),
        budget_bytes=1 << 30,
    )
    assert re.search(rf"^windows run\s+{p.windows_run} ", done.out, re.M)
    assert re.search(rf"^suggested batch\s+{p.suggested_batch_size} for 1.0 GiB", done.out, re.M)
    assert (data / "layout.png").read_bytes()[:4] == b"\x89PNG"  # --picture


# -- info, demo ------------------------------------------------------------------------------------
def test_info_prints_the_shape(data: Path, runs: Runs) -> None:
    done = runs["info"]
    assert done.code == 0, done.err
    assert re.search(r"^shape\s+\(1, 1, 20, 24, 28\)", done.out, re.M)
    assert re.search(r"^format\s+zarr$", done.out, re.M)
    assert re.search(r"^dtype\s+float32", done.out, re.M)
    code, out, _ = _in_process(["info", str(data / "img.zarr"), "--json"])
    assert code == 0
    record = json.loads(out)
    assert record["shape"] == [1, 1, *SHAPE]
    assert record["chunks"] == [1, 1, 10, 12, 14]
    assert record["axes"] == "nczyx"


def test_demo_help_and_forwarding(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    done = runs["demo-help"]
    assert done.code == 0, done.err
    assert "tilewise demo --size tiny" in done.out
    seen: list[list[str]] = []

    def fake(argv: list[str] | None = None) -> int:
        seen.append(list(argv or []))
        return 3

    monkeypatch.setattr("tilewise.demo.main", fake)
    code, _, _ = _in_process(["demo", "--size", "tiny", "--out", "somewhere", "--seed", "4"])
    assert code == 3
    assert seen == [["--size", "tiny", "--out", "somewhere", "--seed", "4"]]


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("missing-input", "missing.zarr"),
        ("bad-window", "'12,x'"),
        ("window-too-large", "--pad reflect"),  # the library's advice, in options
        ("unknown-blend", "'foo'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(runs: Runs, name: str, says: str) -> None:
    done = runs[name]
    assert done.code == 2, done.err
    assert "Traceback" not in done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1, done.err
    assert lines[0].startswith("tilewise: error: ")
    assert says in lines[0]
    assert done.out == ""


def test_python_m_tilewise_cli_also_works(runs: Runs) -> None:
    done = runs["module-plan"]
    assert done.code == 0, done.err
    assert re.search(r"^windows\s+2310$", done.out, re.M)
    bad = runs["module-bad"]
    assert bad.code == 2
    assert bad.err.startswith("tilewise: error: ")
    assert len(bad.err.strip().splitlines()) == 1, bad.err


@pytest.mark.skipif(
    importlib.util.find_spec("aiohttp") is None or importlib.util.find_spec("s3fs") is None,
    reason="needs aiohttp and s3fs",
)
@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("secret-output", "'https://127.0.0.1:9/o.zarr'"),  # the library's message, redacted
        ("secret-s3-input", "'s3://bucket/x.zarr'"),  # botocore names the bucket 'KEYID:s3cr3t@'
        ("unreachable-input", "ClientConnectorError"),
    ],
)
def test_unreachable_locations_exit_2_without_credentials(runs: Runs, name: str, says: str) -> None:
    done = runs[name]
    assert done.code == 2, done.err
    assert "Traceback" not in done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1, done.err
    assert lines[0].startswith("tilewise: error: ")
    assert says in lines[0]
    for secret in ("s3cr3t", "alice", "KEYID"):
        assert secret not in done.err + done.out


SECRET_URL = "https://alice:hunter2pw@127.0.0.1:9/x.zarr"


class ClientConnectorError(Exception):
    """Stands for aiohttp's (not an OSError here): client errors are known by their module."""

    __module__ = "aiohttp.client_exceptions"


def _caused_by_timeout() -> Exception:
    err = RuntimeError("the store failed")
    err.__cause__ = TimeoutError("timed out")
    return err


@pytest.mark.parametrize(
    ("make", "code", "says"),
    [
        (lambda: ConnectionRefusedError(f"cannot reach {SECRET_URL}"), 2, "INPUT: expected"),
        (lambda: ClientConnectorError("Cannot connect to host 127.0.0.1:9"), 2, "INPUT: expected"),
        (lambda: PermissionError(13, "Permission denied", "x.zarr"), 2, "INPUT: expected"),
        (_caused_by_timeout, 2, "RuntimeError: the store failed"),
        (lambda: tw.TilewiseError(f"source: received {SECRET_URL!r}"), 2, "127.0.0.1:9/x.zarr"),
        (lambda: RuntimeError(f"a bug while reading {SECRET_URL}"), 1, "unexpected"),
    ],
)
@pytest.mark.parametrize("debug", [False, True])
def test_errors_never_show_credentials(
    monkeypatch: pytest.MonkeyPatch, make, code: int, says: str, debug: bool
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise make()

    monkeypatch.setattr(tw, "open_array", fail)
    got, out, err = _in_process(["info", SECRET_URL, *(["--debug"] if debug else [])])
    assert got == code, err
    assert out == ""
    assert "hunter2pw" not in err
    assert "alice" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tilewise: error: ")
    assert says in last
    if debug:
        assert "Traceback" in err
    else:
        assert len(err.strip().splitlines()) == 1, err


def test_credentials_hidden_where_a_library_prints_them_without_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class ParamValidationError(Exception):
        __module__ = "botocore.exceptions"

    def fail(*args: object, **kwargs: object) -> None:
        raise ParamValidationError('Invalid bucket name "KEYID:hunter2pw@bucket"')

    monkeypatch.setattr(tw, "open_array", fail)
    code, _, err = _in_process(["info", "s3://KEYID:hunter2pw@bucket/x.zarr"])
    assert code == 2
    assert 'Invalid bucket name "bucket"' in err
    assert "'s3://bucket/x.zarr'" in err
    assert "remove user:password@ from the URL" in err
    assert "hunter2pw" not in err
    assert "KEYID" not in err


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_state_dict_is_not_a_model(data: Path, tmp_path: Path, checkpoint: bool) -> None:
    weights = _net().state_dict()
    path = tmp_path / "weights.pth"
    torch.save({"model": weights, "epoch": 3} if checkpoint else weights, path)
    args = [str(path), str(data / "img.zarr"), str(tmp_path / "o.zarr")]
    code, _, err = _in_process(["predict", *args, *TILING])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("tilewise: error: MODEL: expected a torch.export (.pt2) or TorchScript")
    assert "a state dict" in err
    assert "torch.export.save(" in err
    assert "torch.jit.save(" in err
    assert "ModelFactory" not in err  # the Python API's way, which the command line cannot take


def test_argmax_is_short_for_out_dtype_argmax(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake(*args: object, **kwargs: object) -> None:
        seen.append(str(kwargs["out_dtype"]))
        raise tw.TilewiseError("stopped here")

    monkeypatch.setattr(tw, "predict", fake)
    argv = ["predict", *(str(data / f) for f in ("net.pt2", "img.zarr", "oa.zarr")), *TILING]
    for extra in ("", "--argmax", "--argmax --out-dtype argmax", "--out-dtype uint8"):
        code, _, err = _in_process([*argv, *extra.split()])
        assert (code, err) == (2, "tilewise: error: stopped here\n")
    assert seen == ["float32", "argmax", "argmax", "uint8"]
    _, out, _ = _in_process(["predict", "--help"])
    assert "--argmax" in out
    assert "[default: float32]" in out


def test_every_option_has_help() -> None:
    commands = [("", cli.cli), *cli.cli.commands.items()]
    missing = [
        f"tilewise {name} {param.opts[0]}".replace("  ", " ")
        for name, command in commands
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert missing == []


def _in_process(argv: list[str]) -> tuple[int, str, str]:
    """Run ``cli.main`` here, capturing what it prints."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ("plan 10,10 --window 4", "Missing option '--step'"),
        ("plan 10,10 --window 4 --step 0", "--step"),
        ("plan 10,10 --window 4,4,4 --step 2", "3 values"),
        ("plan 10,10 --window 4 --step 2 --budget lots", "'lots'"),
        ("plan 10,10 --window 4 --step 2 --border 1 --blend hann", "alternatives"),
        ("plan 10,10 --window 4 --step 2 --border-weight 0.5", "needs --border"),
        ("plan 10,10 --window 4 --step 2 --blend border:3:0", "border"),  # > half the window
        ("plan 10,10 --window 4 --step 2 --blend gaussian:wide", "'gaussian:wide'"),
        ("plan 10,10 --window 4 --step 2 --chunks 4,4,4", "--chunks"),
        ("info no/such/file.zarr", "no/such/file.zarr"),
        ("frobnicate", "No such command"),
        ("predict m.pt2 i.zarr o.zarr --window 4 --step 2 --workers 2 --dask-scheduler x:1", "alt"),
        ("predict m.pt2 i.zarr o.zarr --window 4 --step 2 --device toaster", "--device"),
        ("sample i.zarr l.zarr o.zarr --window 4 --step 2 --ignore none", "--ignore"),
        ("predict m.pt2 i.zarr o.zarr --window 4 --step 2 --argmax --out-dtype uint8", "contra"),
        ("plan 10,10 --window 4 --step 2 --picture /no/such/folder/x.png", "does not exist"),
        ("plan 10,10 --window 4 --step 2 --picture .", "a folder"),
    ],
)
def test_argument_errors_in_process(args: str, says: str) -> None:
    code, out, err = _in_process(shlex.split(args))
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("tilewise: error: ")
    assert says in err


def test_unexpected_errors_exit_1_and_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tw, "open_array", boom)
    code, _, err = _in_process(["info", "x.zarr"])
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "RuntimeError: disk on fire" in err
    assert "--debug" in err
    code, _, err = _in_process(["info", "x.zarr", "--debug"])
    assert code == 1
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("tilewise: error: RuntimeError")


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tw, "open_array", stop)
    code, _, err = _in_process(["info", "x.zarr"])
    assert code == 130
    assert "interrupted" in err


@pytest.mark.parametrize("name", ["predict", "sample", "plan", "info", "demo"])
def test_every_command_has_help_with_examples(name: str) -> None:
    code, out, _ = _in_process([name, "--help"])
    assert code == 0
    assert f"Usage: tilewise {name}" in out
    assert "Examples:" in out
    assert f"tilewise {name}" in out.split("Examples:")[1]


def test_no_arguments_and_version() -> None:
    code, out, _ = _in_process([])
    assert code == 0
    assert "Commands:" in out
    code, out, _ = _in_process(["--version"])
    assert (code, out.strip()) == (0, f"tilewise, version {tw.__version__}")


def test_the_worked_example_at_tiny_size(tmp_path):
    """tilewise demo end to end: tables, OME-Zarr probabilities, a real figure, no seams."""
    proc = subprocess.run(
        [*command("demo --size tiny"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Total windows" in out
    assert "Subsampled tensor shape" in out
    f1 = float(out.split("macro-F1 on held-out voxels")[1].split()[0])
    seam = float(out.split("seam error (tiled vs whole)")[1].split()[0])
    assert f1 > 0.6
    assert seam < 1e-5
    figure = tmp_path / "figure.png"
    assert figure.stat().st_size > 20_000
    import zarr

    probs = zarr.open_group(tmp_path / "probabilities.ome.zarr")["0"]
    assert probs.shape == (2, 48, 96, 80)
