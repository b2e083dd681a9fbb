"""predict: exact tiled inference in memory, output geometry, heads, TTA, AMP, non-finite."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tilewise as tw


def conv_net(ndim: int, c_in: int = 1, c_out: int = 2, padding: int | str = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(
        conv(c_in, 4, 3, padding=padding), torch.nn.ReLU(), conv(4, c_out, 3, padding=padding)
    ).eval()


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_tiled_equals_whole_with_a_receptive_field_border(ndim, batch_size):
    shape = (30, 41, 37)[-ndim:]
    x = torch.rand(2, 1, *shape)
    net = conv_net(ndim)
    t = tw.Tiling(shape, window=16, step=12)  # border 2 = receptive radius, 16 - 4 = 12
    y = tw.predict(net, x, t, blend=tw.blend.border(2, weight=0.0), batch_size=batch_size)
    with torch.no_grad():
        whole = net(x)
    torch.testing.assert_close(y, whole, rtol=0, atol=2e-6)


def test_valid_convolutions_are_padded_by_the_crop_margin():
    x = torch.rand(1, 1, 33, 29)
    net = conv_net(2, padding=0)  # output = window - 4: a crop of 2 per side
    t = tw.Tiling((33, 29), window=16, step=12)
    y = tw.predict(net, x, t)
    with torch.no_grad():
        whole = net(F.pad(x, (2, 2, 2, 2), mode="reflect"))
    assert y.shape == (1, 2, 33, 29)
    torch.testing.assert_close(y, whole, rtol=0, atol=2e-6)


def test_up_and_down_scaling_models():
    x = torch.rand(1, 2, 24, 36)
    t = tw.Tiling((24, 36), window=12, step=8)

    def up(z):
        return F.interpolate(z, scale_factor=2, mode="nearest")

    def down(z):
        return F.avg_pool2d(z, 2)

    torch.testing.assert_close(tw.predict(up, x, t), up(x))
    torch.testing.assert_close(tw.predict(down, x, t), down(x))
    with pytest.raises(tw.ShapeMismatchError, match="divisible by the downscale factor 2"):
        tw.predict(down, x, tw.Tiling((24, 36), window=12, step=7))


def test_several_heads_tuple_and_dict():
    x = torch.rand(1, 1, 20, 20)
    t = tw.Tiling((20, 20), window=8, step=6)
    both = tw.predict(lambda z: (z, torch.cat([z, 2 * z], 1)), x, t)
    assert set(both) == {"0", "1"}
    torch.testing.assert_close(both["1"], torch.cat([x, 2 * x], 1))
    named = tw.predict(lambda z: {"mask": z > 0.5, "prob": z}, x, t)
    torch.testing.assert_close(named["mask"], (x > 0.5).float())


def test_flip_tta_averages_back_to_the_equivariant_result():
    x = torch.rand(1, 1, 18, 22)
    t = tw.Tiling((18, 22), window=10, step=6)
    seen = []

    def model(z):
        seen.append(z.shape[0])
        return 3 * z

    torch.testing.assert_close(tw.predict(model, x, t, tta=True), 3 * x)
    plain = len(seen)
    seen.clear()
    tw.predict(model, x, t, tta=[(1,)])
    assert len(seen) * 2 == plain  # identity + one flip, versus identity + 3 flips
    with pytest.raises(tw.ParameterError, match="flip axis sets"):
        tw.predict(model, x, t, tta=[(2,)])


def test_bfloat16_autocast_on_cpu():
    x = torch.rand(1, 1, 20, 20)
    net = conv_net(2)
    t = tw.Tiling((20, 20), window=12, step=8)
    y = tw.predict(net, x, t, amp=True, blend=tw.blend.border(2, weight=0.0))
    assert y.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(y, net(x), rtol=0.05, atol=0.05)
    with pytest.raises(tw.ParameterError, match="amp"):
        tw.predict(net, x, t, amp="int8")


@pytest.mark.parametrize(
    ("out_dtype", "expected"),
    [
        ("float16", lambda p: p.half()),
        ("argmax", lambda p: p.argmax(1, keepdim=True).to(torch.uint8)),
        ("threshold", lambda p: (p > 0.5).to(torch.uint8)),
        ("uint8", lambda p: (p * 255).round().to(torch.uint8)),
    ],
)
def test_reduced_output_dtypes(out_dtype, expected):
    x = torch.rand(1, 1, 16, 16)
    t = tw.Tiling((16, 16), window=8, step=8)
    y = tw.predict(lambda z: torch.cat([z, 1 - z], 1), x, t, out_dtype=out_dtype)
    assert torch.equal(y, expected(torch.cat([x, 1 - x], 1)))


def test_uint8_output_refuses_values_that_are_not_probabilities():
    x = volume()
    with pytest.raises(tw.ParameterError, match="from -1 to 1"):
        tw.predict(lambda z: torch.cat([z, 2 * z - 1], 1), x, T3, out_dtype="uint8")


def test_nonfinite_outputs_raise_with_position_or_are_refilled(tmp_path):
    x = torch.rand(1, 1, 40, 40)
    t = tw.Tiling((40, 40), window=16, step=8)

    def model(z):
        out = z.clone()
        hit = z[:, 0, 0, 0] == x[0, 0, 8, 8]  # the window that starts at (8, 8)
        out[hit, 0, 3, 3] = float("inf")
        return out

    with pytest.raises(tw.NonFiniteError, match=r"window 5 at start \(8, 8\)"):
        tw.predict(model, x, t, batch_size=2)
    with pytest.raises(tw.NonFiniteError, match=r"window 5 at start \(8, 8\)"):  # block by block
        tw.predict(model, x, t, batch_size=2, out=tmp_path / "o.zarr", chunks=(8, 8))
    y = tw.predict(model, x, t, batch_size=2, on_nonfinite="drop", blend=tw.blend.hann())
    torch.testing.assert_close(y, x)


def test_progress_bar_on_request(capsys):
    x = torch.rand(1, 1, 20, 20)
    tw.predict(lambda z: z, x, tw.Tiling((20, 20), window=8, step=4), progress=True)
    err = capsys.readouterr().err
    assert "16/16 windows" in err
    assert "ETA" in err


def test_lazy_numpy_memmap_source(tmp_path):
    x = np.random.default_rng(0).random((1, 1, 30, 30), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = tw.predict(lambda z: z * 2, mm, tw.Tiling((30, 30), window=12, step=9))
    np.testing.assert_allclose(y.numpy(), 2 * x, rtol=1e-6)


def test_plan_estimates_and_suggests_a_batch_size():
    t = tw.Tiling((236, 720, 510), window=128, step=108)
    p = tw.plan(t, out_channels=2, batch_size=2, activation_bytes_per_voxel=64)
    assert p.windows == 70
    assert p.device_bytes == 2 * 128**3 * (4 + 8 + 64)
    assert p.host_bytes >= 236 * 720 * 510 * 8
    fit = tw.plan(t, out_channels=2, activation_bytes_per_voxel=64, budget_bytes=2 << 30)
    assert fit.suggested_batch_size == (2 << 30) // (128**3 * 76)
    assert p.result_bytes == 236 * 720 * 510 * 2 * 4  # what predict may keep on a GPU
    ooc = tw.plan(t, out_channels=2, out=True, chunks=(64, 64, 64), block=(128, 256, 256))
    assert ooc.windows_run >= ooc.windows
    assert ooc.host_bytes < p.host_bytes
    assert ooc.result_bytes == 2 * 128 * 256 * 256 * 2 * 4  # a window spans two blocks' depth
    assert "windows" in str(ooc)
    tight = tw.plan(t, activation_bytes_per_voxel=64, budget_bytes=1 << 20)
    assert tight.suggested_batch_size == 0
    assert "over the budget" in str(tight)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model": 42}, tw.ParameterTypeError, "callable"),
        ({"model": "missing.pt"}, tw.ParameterError, "TorchScript"),
        ({"batch_size": 0}, tw.ParameterError, "batch_size"),
        ({"on_nonfinite": "ignore"}, tw.ParameterError, "on_nonfinite"),
        ({"out_dtype": "int4"}, tw.ParameterError, "out_dtype"),
        ({"model": lambda z: z[:, :, :5]}, tw.ShapeMismatchError, "on axis 0"),
        ({"model": lambda z: z[0]}, tw.ShapeMismatchError, "model output"),
        ({"model": lambda z: "x"}, tw.ParameterTypeError, "model output"),
        ({"source": [1, 2]}, tw.ParameterTypeError, "source"),
        ({"source": torch.rand(1, 1, 21, 20)}, tw.ShapeMismatchError, r"\(N, C, 20, 20\)"),
    ],
)
def test_predict_errors(kwargs, error, match):
    args = {
        "model": lambda z: z,
        "source": torch.rand(1, 1, 20, 20),
        "tiling": tw.Tiling((20, 20), window=8, step=4),
        **kwargs,
    }
    model, source, tiling = args.pop("model"), args.pop("source"), args.pop("tiling")
    with pytest.raises(error, match=match):
        tw.predict(model, source, tiling, **args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_predict_matches_cpu():  # pragma: no cover - runs on GPU machines only
    x = torch.rand(1, 1, 64, 64, 64)
    net = conv_net(3)
    t = tw.Tiling((64, 64, 64), window=32, step=28)
    cpu = tw.predict(net, x, t, blend=tw.blend.border(2, weight=0.0), device="cpu")
    gpu = tw.predict(net.cuda(), x, t, blend=tw.blend.border(2, weight=0.0), device="cuda")
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


# -- out of core: zarr output, blocks, journal, resume, lock -----------------------------------
zarr = pytest.importorskip("zarr")


def volume(shape=(1, 1, 40, 44, 36), seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


def net3d():
    return conv_net(3)


T3 = tw.Tiling((40, 44, 36), window=16, step=12)
SMALL = {"chunks": (8, 8, 8), "block": (16, 16, 16)}


def test_zarr_output_equals_in_memory(tmp_path):
    x = volume((2, 1, 40, 44, 36))
    net = net3d()
    mem = tw.predict(net, x, T3, blend=tw.blend.hann())
    info = tw.predict(
        net, x, T3, blend=tw.blend.hann(), out=tmp_path / "o.zarr", return_info=True, **SMALL
    )
    z = info.output
    assert z.shape == (2, 2, 40, 44, 36)
    assert z.chunks == (1, 2, 8, 8, 8)
    torch.testing.assert_close(torch.from_numpy(z[:]), mem, rtol=0, atol=2e-6)
    assert info.blocks == 2 * 3 * 3 * 3
    assert 0 <= info.seconds_waiting <= info.seconds  # the model waiting for input batches

    # rows of blocks sweep the first axis: a window runs once per row it reaches
    def reaching(starts, lo, hi):
        return sum(1 for a in starts if a < hi and a + 16 > lo)

    ys, xs = T3.axis_starts[1], T3.axis_starts[2]
    per_row = [
        reaching(ys, y, y + 16) * reaching(xs, x, x + 16) for y in (0, 16, 32) for x in (0, 16, 32)
    ]
    assert info.windows_run == 2 * len(T3.axis_starts[0]) * sum(per_row)
    reopened = tw.open_array(tmp_path / "o.zarr")
    assert reopened.shape == (2, 2, 40, 44, 36)


@pytest.mark.parametrize("pad_mode", ["reflect", "replicate"])
def test_lazy_sources_with_a_crop_margin_equal_in_memory(tmp_path, pad_mode):
    # valid convolutions read each window with a margin padded around the volume: the lazy
    # sources are read a slab at a time along the first axis, chunked or not
    x = volume((2, 1, 37, 30, 23), seed=3)
    net = conv_net(3, padding=0)  # a crop of 2 per side
    t = tw.Tiling((37, 30, 23), window=14, step=9)
    mem = tw.predict(net, x, t, pad_mode=pad_mode)
    z = zarr.create_array(tmp_path / "x.zarr", shape=x.shape, chunks=(1, 1, 5, 7, 23), dtype="f4")
    z[:] = x.numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    for src in (z, mm):
        got = tw.predict(
            net, src, t, pad_mode=pad_mode, out=tmp_path / "o.zarr", overwrite=True, **SMALL
        )
        torch.testing.assert_close(torch.from_numpy(got[:]), mem, rtol=0, atol=2e-6)


def test_a_row_runs_each_of_its_windows_once(tmp_path):
    x = volume()
    rows = {"chunks": (8, 8, 8), "block": (8, 48, 40)}  # one row: the whole cross-section
    info = tw.predict(net3d(), x, T3, out=tmp_path / "o.zarr", return_info=True, **rows)
    assert info.blocks == 5
    assert info.windows_run == info.windows == len(T3)
    ref = tw.predict(net3d(), x, T3, out=tmp_path / "ref.zarr", **SMALL)
    np.testing.assert_allclose(info.output[:], ref[:], rtol=0, atol=2e-6)


def test_default_blocks_bound_the_open_accumulators():
    from tilewise._predict import ROW_BYTES, default_block

    t = tw.Tiling((512, 1024, 1024), window=128, step=96)
    block = default_block(t, (128, 128, 128), 2)
    assert block[0] == 128  # one chunk deep along the swept axis
    open_bytes = (128 + block[0]) * block[1] * block[2] * 2 * 4
    assert open_bytes <= ROW_BYTES
    assert default_block(tw.Tiling((40, 50), window=16, step=12), (8, 8), 1) == (16, 56)
    assert default_block(tw.Tiling((100,), window=10, step=3), (7,), 1) == (7,)


def test_empty_chunks_are_not_stored_and_the_codec_is_chosen(tmp_path):
    x = volume()
    x[:, :, :16] = 0  # the model maps zeros to zeros: these chunks come out empty

    def model(z):
        return torch.cat([z, 2 * z], 1)

    out = tw.predict(model, x, T3, out=tmp_path / "o.zarr", **SMALL)
    np.testing.assert_allclose(out[:], torch.cat([x, 2 * x], 1).numpy(), rtol=0, atol=1e-6)
    chunk_files = {p.name for p in (tmp_path / "o.zarr" / "c").rglob("*") if p.is_file()}
    assert len(chunk_files) > 0
    stored = sum(1 for p in (tmp_path / "o.zarr" / "c" / "0" / "0").iterdir())
    assert stored == 3  # z chunks 16..40 only: 0..16 is empty
    meta = json.loads((tmp_path / "o.zarr" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes", "blosc"]
    plain = tw.predict(model, x, T3, out=tmp_path / "p.zarr", compressors=None, **SMALL)
    meta = json.loads((tmp_path / "p.zarr" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]] == ["bytes"]
    np.testing.assert_array_equal(plain[:], out[:])


def test_a_resumed_block_rewrites_chunks_a_broken_write_left(tmp_path):
    x = volume()
    x[:, :, :16] = 0  # empty chunks there: not stored

    def model(z):
        return torch.cat([z, 2 * z], 1)

    out = tmp_path / "o.zarr"
    ref = tw.predict(model, x, T3, out=out, **SMALL)[:]
    z = zarr.open_array(out, mode="r+")
    z[0, :, 0:8, 0:8, 0:8] = 7.0  # a write of block 0 that was cut short, then the crash
    (out / ".tilewise" / "done" / "0_0-16_0-16_0-16").unlink()
    again = tw.predict(model, x, T3, out=out, return_info=True, **SMALL)
    assert again.blocks_skipped == 26
    np.testing.assert_array_equal(again.output[:], ref)


def test_a_broken_run_record_is_refused_and_the_lock_released(tmp_path):
    x = volume()
    out = tmp_path / "o.zarr"
    tw.predict(lambda z: z, x, T3, out=out, **SMALL)
    (out / ".tilewise" / "run.json").write_text('{"tiling": ')
    with pytest.raises(tw.ResumeMismatchError, match="unreadable"):
        tw.predict(lambda z: z, x, T3, out=out, **SMALL)
    tw.predict(lambda z: z, x, T3, out=out, overwrite=True, **SMALL)  # not locked by us


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    x = volume()
    (tmp_path / "o.zarr").write_text("not a store")
    for overwrite in (False, True):
        with pytest.raises(tw.ParameterError, match="which is a file"):
            tw.predict(lambda z: z, x, T3, out=tmp_path / "o.zarr", overwrite=overwrite, **SMALL)


GLOBAL_NET = conv_net(3)


def global_model(z):
    return GLOBAL_NET(z)


def test_models_with_buffers_and_weights_reached_by_name_are_fingerprinted(tmp_path):
    x = volume()
    bn = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2)).eval()
    tw.predict(bn, x, T3, out=tmp_path / "bn.zarr", **SMALL)  # a 0-dim buffer in the weights
    out = tmp_path / "o.zarr"
    tw.predict(global_model, x, T3, out=out, **SMALL)
    with torch.no_grad():
        GLOBAL_NET[0].bias.add_(1.0)
    try:
        with pytest.raises(tw.ResumeMismatchError, match="model"):
            tw.predict(global_model, x, T3, out=out, **SMALL)
    finally:
        with torch.no_grad():
            GLOBAL_NET[0].bias.sub_(1.0)


def test_reading_a_zarr_path_and_writing_argmax(tmp_path):
    x = volume()
    src = zarr.create_array(
        tmp_path / "in.zarr", shape=x.shape, chunks=(1, 1, 16, 16, 16), dtype="f4"
    )
    src[:] = x.numpy()
    out = tw.predict(
        lambda z: torch.cat([z, 1 - z], 1),
        tmp_path / "in.zarr",
        T3,
        out=tmp_path / "labels.zarr",
        out_dtype="argmax",
        **SMALL,
    )
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:][:, 0], (x.numpy()[:, 0] < 0.5).astype(np.uint8))


class Interrupt(RuntimeError):
    pass


# interruptions at model calls drawn at random (fixed seed): in a row's first batches, between
# blocks of a row, and late in the run (the run makes 30 model calls, the probe's included)
@pytest.mark.parametrize("crash_at", [9, *random.Random(7).sample(range(3, 30), 3)])
def test_resume_after_a_crash_in_the_model_is_bit_identical(tmp_path, crash_at):
    x = volume()
    net = net3d()
    ref = tw.predict(net, x, T3, out=tmp_path / "ref.zarr", **SMALL)[:]
    calls = {"n": 0}

    def crash(module, args, output):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise Interrupt("simulated crash")

    hook = net.register_forward_hook(crash)  # same network, same weights
    with pytest.raises(Interrupt):
        tw.predict(net, x, T3, out=tmp_path / "o.zarr", **SMALL)
    hook.remove()
    done_before = len(list((tmp_path / "o.zarr" / ".tilewise" / "done").iterdir()))
    assert done_before < 27
    info = tw.predict(net, x, T3, out=tmp_path / "o.zarr", return_info=True, **SMALL)
    assert info.blocks_skipped == done_before
    np.testing.assert_array_equal(info.output[:], ref)


KILL_SCRIPT = """
import sys, time, numpy as np, torch, tilewise as tw
torch.manual_seed(0)
conv = torch.nn.Conv3d
layers = [conv(1, 4, 3, padding=1), torch.nn.ReLU(), conv(4, 2, 3, padding=1)]
net = torch.nn.Sequential(*layers).eval()
x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 40, 44, 36), dtype=np.float32))
def slow(z):
    time.sleep(float(sys.argv[2]))
    return net(z)
t = tw.Tiling((40, 44, 36), window=16, step=12)
tw.predict(slow, x, t, out=sys.argv[1], chunks=(8, 8, 8), block=(16, 16, 16))
"""


def test_resume_after_kill_9_is_bit_identical(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "o.zarr"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0.02"])
    done = out / ".tilewise" / "done"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not done.exists() or len(list(done.iterdir())) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / ".tilewise" / "lock").exists()  # left behind by the killed writer
    finished = len(list(done.iterdir()))
    assert 3 <= finished < 27
    subprocess.run([sys.executable, str(script), str(out), "0"], check=True)
    ref = tmp_path / "ref.zarr"
    subprocess.run([sys.executable, str(script), str(ref), "0"], check=True)
    np.testing.assert_array_equal(zarr.open_array(out)[:], zarr.open_array(ref)[:])
    assert not (out / ".tilewise" / "lock").exists()


HOLD_LOCK = """
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
print("locked", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def lock_held_by_another_process(out):
    """Another live process holding the writer lock of ``out``, as a concurrent run does."""
    lock = out / ".tilewise" / "lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_lock_left_by_a_dead_writer_is_taken_over(tmp_path):
    x = volume()
    out = tmp_path / "o.zarr"
    tw.predict(lambda z: z, x, T3, out=out, **SMALL)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    (out / ".tilewise" / "lock").write_text(
        json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "time": 0})
    )
    tw.predict(lambda z: z, x, T3, out=out, **SMALL)  # no process holds it: taken over
    assert not (out / ".tilewise" / "lock").exists()


def test_an_output_no_run_started_is_not_overwritten(tmp_path):
    x = volume()
    foreign = zarr.create_array(
        tmp_path / "o.zarr",
        shape=(1, 1, 40, 44, 36),
        dtype="f4",
        chunks=(1, 1, 8, 8, 8),
        fill_value=42.0,
    )
    with pytest.raises(tw.ParameterError, match="no tilewise run recorded"):
        tw.predict(lambda z: z, x, T3, out=tmp_path / "o.zarr", **SMALL)
    assert float(foreign[0, 0, 0, 0, 0]) == 42.0
    assert not (tmp_path / "o.zarr" / ".tilewise").exists()
    z = tw.predict(lambda z: z, x, T3, out=tmp_path / "o.zarr", overwrite=True, **SMALL)
    np.testing.assert_allclose(z[:], x.numpy(), rtol=1e-6)


def test_a_second_writer_is_refused(tmp_path):
    x = volume()
    out = tmp_path / "o.zarr"
    tw.predict(lambda z: z, x, T3, out=out, **SMALL)
    with lock_held_by_another_process(out) as pid:  # noqa: SIM117 - the match needs pid
        with pytest.raises(tw.ConcurrentWriterError, match=f"process {pid}"):
            tw.predict(lambda z: z, x, T3, out=out, **SMALL)
    tw.predict(lambda z: z, x, T3, out=out, **SMALL)  # the holder is gone: stale lock taken


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    x = volume()
    out = tmp_path / "o.zarr"
    tw.predict(lambda z: z, x, T3, out=out, **SMALL)
    with pytest.raises(tw.ResumeMismatchError, match="blend"):
        tw.predict(lambda z: z, x, T3, out=out, blend=tw.blend.hann(), **SMALL)
    z = tw.predict(lambda z: 2 * z, x, T3, out=out, blend=tw.blend.hann(), overwrite=True, **SMALL)
    np.testing.assert_allclose(z[:], 2 * x.numpy(), rtol=1e-6)


def test_a_resume_must_read_the_same_input_with_the_same_model(tmp_path):
    x = volume()
    for name, data in (("a.zarr", x.numpy()), ("b.zarr", 0 * x.numpy())):
        zarr.create_array(tmp_path / name, shape=x.shape, chunks=(1, 1, 16, 16, 16), dtype="f4")[
            :
        ] = data
    out = tmp_path / "o.zarr"
    tw.predict(lambda z: z, tmp_path / "a.zarr", T3, out=out, **SMALL)
    with pytest.raises(tw.ResumeMismatchError, match="source"):
        tw.predict(lambda z: z, tmp_path / "b.zarr", T3, out=out, **SMALL)
    with pytest.raises(tw.ResumeMismatchError, match="model"):  # no weights: its code tells
        tw.predict(lambda z: 2 * z, tmp_path / "a.zarr", T3, out=out, **SMALL)
    again = tw.predict(
        lambda z: z, tmp_path / "a.zarr", T3, out=out, batch_size=2, return_info=True, **SMALL
    )
    assert again.blocks_skipped == 27  # another batch size resumes (after an OOM, say)


def test_ome_zarr_in_gives_ome_zarr_out_with_the_same_geometry(tmp_path):
    x = volume()
    info = tw.ArrayInfo(
        format="ome-zarr",
        source="",
        axes=("n", "c", "z", "y", "x"),
        voxel_size=(2.0, 0.5, 0.5),
        origin=(10.0, 0.0, 5.0),
        units=("micrometer",) * 3,
        chunks=None,
        level=0,
    )
    src = tw.create_zarr(
        tmp_path / "in.ome.zarr",
        x.shape,
        np.float32,
        chunks=(1, 1, 16, 16, 16),
        info=info,
        ome=True,
    )
    src[:] = x.numpy()
    out = tw.predict(
        lambda z: z, tmp_path / "in.ome.zarr", T3, out=tmp_path / "out.ome.zarr", **SMALL
    )
    back = tw.open_array(tmp_path / "out.ome.zarr")
    assert back.info.format == "ome-zarr"
    assert back.info.voxel_size == (2.0, 0.5, 0.5)
    assert back.info.origin == (10.0, 0.0, 5.0)
    np.testing.assert_allclose(np.asarray(back), x.numpy(), rtol=1e-6)
    assert out.shape == x.shape


def test_several_heads_to_zarr(tmp_path):
    x = volume()
    out = tw.predict(lambda z: {"a": z, "b": -z}, x, T3, out=tmp_path / "h.zarr", **SMALL)
    assert set(out) == {"a", "b"}
    np.testing.assert_allclose(out["b"][:], -x.numpy(), rtol=1e-6)
    root = zarr.open_group(tmp_path / "h.zarr", mode="r")  # a real group, one array per head
    assert sorted(root.array_keys()) == ["a", "b"]
    assert root.attrs["tilewise"] == {"heads": ["a", "b"]}
    b = tw.open_array(tmp_path / "h.zarr", dataset="b")
    np.testing.assert_array_equal(b[:], out["b"][:])
    with pytest.raises(tw.ParameterError, match="dataset="):
        tw.open_array(tmp_path / "h.zarr")
    ome = tw.predict(
        lambda z: {"a": z, "b": -z}, x, T3, out=tmp_path / "h.ome.zarr", ome=True, **SMALL
    )
    img = tw.open_array(tmp_path / "h.ome.zarr", dataset="b")
    assert img.info.format == "ome-zarr"
    np.testing.assert_array_equal(img[:], ome["b"][:])


# -- regressions found in review -----------------------------------------------------------------
def test_a_crop_whose_size_divides_the_window_is_not_taken_for_a_downscale():
    x = torch.rand(1, 1, 24, 24)
    net = torch.nn.Conv2d(1, 1, 7)  # window 12 -> 6: a crop of 3, or a downscale by 2?
    y = tw.predict(net, x, tw.Tiling((24, 24), window=12, step=4))
    with torch.no_grad():
        whole = net(F.pad(x, (3, 3, 3, 3), mode="reflect"))
    torch.testing.assert_close(y, whole, rtol=0, atol=2e-6)
    pooled = tw.predict(lambda z: F.avg_pool2d(z, 2), x, tw.Tiling((24, 24), window=12, step=4))
    torch.testing.assert_close(pooled, F.avg_pool2d(x, 2))
    with pytest.raises(tw.ShapeMismatchError, match="crop and scale together"):
        tw.predict(lambda z: F.avg_pool2d(z[:, :, 2:-2, 2:-2], 2), x, tw.Tiling((24, 24), 12, 4))


def test_scaling_with_virtual_padding_is_refused():
    t = tw.Tiling((10,), window=15, step=4, pad="reflect")
    with pytest.raises(tw.ParameterError, match="no virtual padding"):
        tw.predict(lambda z: F.interpolate(z, scale_factor=2), torch.rand(1, 1, 10), t)


def test_tta_with_a_model_that_works_in_place():
    x = torch.rand(1, 1, 12, 12)

    def in_place(z):
        return z.mul_(2)

    y = tw.predict(in_place, x, tw.Tiling((12, 12), window=6, step=4), tta=True)
    torch.testing.assert_close(y, 2 * x)


def test_float64_sources_reach_float64_models():
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    net = torch.nn.Conv2d(1, 1, 3, padding=1).double()
    y = tw.predict(net, x, tw.Tiling((12, 12), window=6, step=4), blend=tw.blend.border(1, 0.0))
    with torch.no_grad():
        torch.testing.assert_close(y, net(x).float(), rtol=1e-5, atol=1e-6)


def test_a_block_with_every_window_dropped_says_so(tmp_path):
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(tw.NonFiniteError, match="every window"):
        tw.predict(
            lambda z: z * float("nan"),
            x,
            tw.Tiling((16, 16), 8, 4),
            on_nonfinite="drop",
            out=tmp_path / "o.zarr",
            chunks=(8, 8),
            block=(8, 8),
        )


def test_overwrite_waits_for_the_lock(tmp_path):
    x = volume()
    out = tmp_path / "o.zarr"
    tw.predict(lambda z: z, x, T3, out=out, **SMALL)
    with lock_held_by_another_process(out):
        with pytest.raises(tw.ConcurrentWriterError):
            tw.predict(lambda z: 2 * z, x, T3, out=out, overwrite=True, **SMALL)
        assert len(list((out / ".tilewise" / "done").iterdir())) == 27  # nothing was deleted


def test_resume_refuses_other_pad_mode_and_overlapping_output(tmp_path):
    x = volume()
    src = zarr.create_array(
        tmp_path / "in.zarr", shape=x.shape, chunks=(1, 1, 16, 16, 16), dtype="f4"
    )
    src[:] = x.numpy()
    valid = torch.nn.Conv3d(1, 1, 3)
    out = tmp_path / "o.zarr"
    tw.predict(valid, src, T3, out=out, **SMALL)
    with pytest.raises(tw.ResumeMismatchError, match="pad_mode"):
        tw.predict(valid, src, T3, out=out, pad_mode="replicate", **SMALL)
    with pytest.raises(tw.ResumeMismatchError, match="model"):
        tw.predict(torch.nn.Conv3d(1, 1, 3), src, T3, out=out, **SMALL)
    with pytest.raises(tw.ParameterError, match="apart from the input"):
        tw.predict(valid, tmp_path / "in.zarr", T3, out=tmp_path / "in.zarr", **SMALL)


def test_scaled_outputs_carry_their_own_voxel_size(tmp_path):
    x = volume()
    info = tw.ArrayInfo(
        format="ome-zarr",
        source="",
        axes=("n", "c", "z", "y", "x"),
        voxel_size=(2.0, 0.5, 0.5),
        origin=(0.0, 0.0, 0.0),
        units=("micrometer",) * 3,
        chunks=None,
        level=0,
    )
    src = tw.create_zarr(
        tmp_path / "in.ome.zarr", x.shape, np.float32, chunks=(1, 1, 8, 8, 8), info=info, ome=True
    )
    src[:] = x.numpy()
    tw.predict(
        lambda z: F.avg_pool3d(z, 2),
        tmp_path / "in.ome.zarr",
        T3,
        out=tmp_path / "o.ome.zarr",
        chunks=(4, 4, 4),
    )
    back = tw.open_array(tmp_path / "o.ome.zarr")
    assert back.shape == (1, 1, 20, 22, 18)
    assert back.info.voxel_size == (4.0, 1.0, 1.0)
    assert back.info.origin == (1.0, 0.25, 0.25)  # centre of the first 2 x 2 x 2 block


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block": (5,)}, "block"),
        ({"chunks": (0, 8, 8)}, "chunks"),
        ({"device": "bogus"}, "torch device"),
        ({"tta": "yes"}, "tta"),
        ({"threshold": "0.5"}, "threshold"),
        ({"pad_mode": "wrap"}, "pad_mode"),
        ({"geometry": "guess"}, "geometry"),
        ({"out": 5}, "out"),
        ({"blend": "hann"}, "blend"),
    ],
)
def test_bad_predict_arguments(kwargs, match):
    with pytest.raises(tw.TilewiseError, match=match):
        tw.predict(lambda z: z, volume(), T3, **kwargs)


def test_bad_plan_arguments():
    with pytest.raises(tw.TilewiseError, match="batch_size"):
        tw.plan(T3, batch_size=0)
    with pytest.raises(tw.TilewiseError, match="chunks"):
        tw.plan(T3, out=True, chunks=(0, 5, 5))
    with pytest.raises(tw.TilewiseError, match="blend"):
        tw.plan(T3, blend="hann")
    with pytest.raises(tw.ParameterError, match="positive number of bytes"):
        tw.plan(T3, budget_bytes=-5)
    with pytest.raises(tw.ParameterTypeError, match="budget_bytes"):
        tw.plan(T3, budget_bytes=1.5)
