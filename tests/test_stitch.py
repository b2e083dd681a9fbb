"""Extract and stitch: round trips, partition of unity, reference loop, batching, errors."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

import tilewise as tw
from strategies import blends, tilings

MESSAGE = re.compile(r"\S[^:]*: expected .+, received .+\. Fix: .+\.", re.DOTALL)


def assert_explains(error: BaseException) -> None:
    """The project's one message format: what, then expected, received and a fix, each given."""
    assert MESSAGE.fullmatch(str(error)), str(error)


def naive_stitch(patches: torch.Tensor, t: tw.Tiling, blend: tw.blend.Blend, n: int):
    """Reference: two float64 accumulators and one division, one window at a time."""
    c = patches.shape[1]
    acc = torch.zeros((n, c, *t.shape), dtype=torch.float64)
    norm = torch.zeros(t.shape, dtype=torch.float64)
    for b in range(patches.shape[0]):
        w = t[b % len(t)]
        weight = torch.from_numpy(blend.nd_weight(t.window, w.touches_low, w.touches_high))
        weight = weight[w.valid]
        acc[b // len(t)][(slice(None), *w.slices)] += (
            patches[b].double()[(slice(None), *w.valid)] * weight
        )
        if b < len(t):  # the normaliser is the same for every image
            norm[w.slices] += weight
    return acc / norm


def naive_extract(x: torch.Tensor, t: tw.Tiling) -> torch.Tensor:
    out = [x[n][(slice(None), *w.slices)] for n in range(x.shape[0]) for w in t]
    return torch.stack(out)


@settings(max_examples=60)
@given(t=tilings(pad=True), data=st.data())
def test_round_trip_is_identity_for_every_blend(t, data):
    """extract -> identity -> stitch gives the input back: every blend (border weight 0,
    custom 1-D per axis and N-D included), with and without virtual padding."""
    blend = data.draw(blends(t))
    n = data.draw(st.integers(1, 2))
    x = torch.rand(n, 2, *t.shape, dtype=torch.float64)
    y = tw.stitch(tw.extract(x, t), t, blend=blend)
    torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-12)


@given(t=tilings(pad=True), data=st.data())
def test_partition_of_unity(t, data):
    """The normalised weights of all windows sum to 1 at every voxel."""
    blend = data.draw(blends(t))
    ones = torch.ones(len(t), 1, *t.window, dtype=torch.float64)
    total = tw.stitch(ones, t, blend=blend)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=1e-12, atol=1e-12)


@given(t=tilings(max_axes=3, pad=True), data=st.data())
def test_matches_naive_reference_on_random_outputs(t, data):
    blend = data.draw(blends(t))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    patches = torch.rand(len(t), 2, *t.window, generator=g, dtype=torch.float64)
    ours = tw.stitch(patches, t, blend=blend)
    torch.testing.assert_close(ours, naive_stitch(patches, t, blend, 1), rtol=1e-9, atol=1e-12)
    two = torch.cat([patches, 1 - patches])  # N = 2
    torch.testing.assert_close(
        tw.stitch(two, t, blend=blend), naive_stitch(two, t, blend, 2), rtol=1e-9, atol=1e-12
    )


@given(t=tilings(stitchable=False))
def test_extract_matches_naive_slicing(t):
    x = torch.arange(2 * int(np.prod(t.shape)), dtype=torch.float32).reshape(2, 1, *t.shape)
    assert torch.equal(tw.extract(x, t), naive_extract(x, t))


@given(t=tilings(max_axes=3), data=st.data())
def test_batches_in_any_order_and_grouping_give_the_same_result(t, data):
    blend = data.draw(blends(t))
    n = 2
    total = n * len(t)
    patches = torch.rand(total, 1, *t.window, dtype=torch.float64)
    order = data.draw(st.permutations(range(total)))
    sizes = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=total))
    s = tw.Stitcher(t, n=n, blend=blend)
    pos, k = 0, 0
    while pos < total:
        b = sizes[k % len(sizes)]
        idx = list(order[pos : pos + b])
        s.add(patches[idx], idx)
        pos, k = pos + b, k + 1
    torch.testing.assert_close(s.result(), tw.stitch(patches, t, blend=blend), rtol=1e-12, atol=0)


@given(t=tilings(max_axes=3), batch=st.integers(1, 9))
def test_extract_batches_cover_all_windows_in_order(t, batch):
    x = torch.rand(2, 1, *t.shape)
    every = tw.extract(x, t)
    for reuse in (False, True):
        seen = []
        for idx, b in tw.extract_batches(x, t, batch, reuse=reuse):
            assert torch.equal(b, every[idx.start : idx.stop])
            seen.extend(idx)
        assert seen == list(range(len(every)))


@pytest.mark.parametrize(
    "wanted",
    [
        lambda b: b == tw.blend.border((1, 1), weight=0.0),
        lambda b: isinstance(getattr(b, "width", None), tuple),
        lambda b: repr(b).startswith("blend.custom(<weights [") and b.separable,  # per axis
        lambda b: repr(b).startswith("blend.custom") and not b.separable,  # N-D
    ],
)
def test_blend_strategy_reaches_every_kind(wanted):
    """The properties above see border weight 0, per-axis widths and custom blends."""
    find(blends(T2D), wanted, settings=settings(max_examples=2000, database=None))


def test_tiling_strategy_reaches_virtual_padding():
    t = find(
        tilings(pad=True),
        lambda t: any(a or b for a, b in t.padding),
        settings=settings(database=None),
    )
    assert t.pad in ("reflect", "constant", "replicate")


# -- tiny hand-computed outputs, one per blend ------------------------------------------------
# size 6, window 4, step 2: windows [0,4) and [2,6) overlap on voxels 2 and 3.
# Window 0 outputs 0, window 1 outputs 1. Window 0 touches the low edge, window 1 the high edge,
# so window 0's profile is flat on its low side and window 1's on its high side.
HANN_R = 0.3455 / 0.9045
HAND = [
    # uniform: plain mean in the overlap
    (tw.blend.uniform(), [0, 0, 0.5, 0.5, 1, 1]),
    # border(1, 0.25): w0 = [1, 1, 1, .25], w1 = [.25, 1, 1, 1] -> voxel 2: .25/1.25, 3: 1/1.25
    (tw.blend.border(1, weight=0.25), [0, 0, 0.2, 0.8, 1, 1]),
    # border(1, 0): voxel 2 only from w0 (w1's band has weight 0) -> 0; voxel 3 only from w1
    (tw.blend.border(1, weight=0.0), [0, 0, 0, 1, 1, 1]),
    # ramp(1): [1/2, 1, 1, 1/2] -> w0 = [1, 1, 1, .5], w1 = [.5, 1, 1, 1]
    (tw.blend.ramp(1), [0, 0, 1 / 3, 2 / 3, 1, 1]),
    # hann on 4: sin^2(pi k / 5) = [.3455, .9045, .9045, .3455] / .9045 = [r, 1, 1, r]
    (tw.blend.hann(), [0, 0, HANN_R / (1 + HANN_R), 1 / (1 + HANN_R), 1, 1]),
    # custom 1-D profile, used exactly as given (edge_aware=False)
    (tw.blend.custom([1.0, 2.0, 3.0, 4.0], edge_aware=False), [0, 0, 1 / 4, 2 / 6, 1, 1]),
]


@pytest.mark.parametrize(("blend", "expected"), HAND)
def test_hand_computed_1d(blend, expected):
    t = tw.Tiling((6,), window=4, step=2)
    patches = torch.tensor([[[0.0] * 4], [[1.0] * 4]], dtype=torch.float64)
    got = tw.stitch(patches, t, blend=blend)[0, 0].tolist()
    assert got == pytest.approx(expected, abs=2e-4)


def test_hand_computed_gaussian():
    t = tw.Tiling((6,), window=4, step=2)
    p = tw.blend.gaussian(0.125).profile(4)  # sigma = 0.5 voxel; centre 1.5
    assert p.tolist() == pytest.approx(
        np.exp(-0.5 * (np.array([-1.5, -0.5, 0.5, 1.5]) / 0.5) ** 2) / np.exp(-0.5)
    )
    patches = torch.tensor([[[0.0] * 4], [[1.0] * 4]], dtype=torch.float64)
    got = tw.stitch(patches, t, blend=tw.blend.gaussian(0.125))[0, 0].tolist()
    # w0 = [1, 1, 1, p0] (low side flat), w1 = [p0, 1, 1, 1] (high side flat), p0 = e^-4
    assert got[2] == pytest.approx(p[0] / (1 + p[0]))
    assert got[3] == pytest.approx(1 / (1 + p[0]))


def test_hand_computed_2d_border_weight_zero_pastes_cores():
    # The paper's inference setting in miniature: window 6, border 1 weight 0, step 4.
    t = tw.Tiling((10, 10), window=6, step=4)
    patches = torch.arange(len(t), dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 6, 6)
    y = tw.stitch(patches.contiguous(), t, blend=tw.blend.border(1, weight=0.0))[0, 0]
    # window k (grid (k // 2, k % 2)) owns rows/cols [0,5) or [5,10)
    expected = torch.zeros(10, 10)
    expected[:5, 5:], expected[5:, :5], expected[5:, 5:] = 1, 2, 3
    assert torch.equal(y, expected)


def test_nd_custom_weights_match_reference():
    t = tw.Tiling((9, 11), window=(5, 6), step=(3, 4))
    w = np.random.default_rng(1).uniform(0.1, 1.0, size=(5, 6))
    blend = tw.blend.custom(w)
    patches = torch.rand(len(t), 1, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(
        tw.stitch(patches, t, blend=blend), naive_stitch(patches, t, blend, 1), rtol=1e-10, atol=0
    )


# -- dtypes, devices, numpy, out= ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.uint8])
def test_low_precision_outputs_accumulate_in_float32(dtype):
    t = tw.Tiling((20, 20), window=8, step=5)
    x = (torch.rand(1, 1, 20, 20) * 100).to(dtype)
    y = tw.stitch(tw.extract(x, t), t, blend=tw.blend.gaussian())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, x.float(), rtol=1e-6, atol=1e-4)


def test_float64_kept_and_requestable():
    t = tw.Tiling((20,), window=8, step=5)
    x64 = torch.rand(1, 1, 20, dtype=torch.float64)
    assert tw.stitch(tw.extract(x64, t), t).dtype == torch.float64
    x32 = x64.float()
    assert tw.stitch(tw.extract(x32, t), t, dtype=torch.float64).dtype == torch.float64
    assert tw.stitch(tw.extract(x32, t), t, dtype="float64").dtype == torch.float64


def test_extract_keeps_dtype_and_numpy_round_trips():
    t = tw.Tiling((12, 14), window=5, step=4)
    x = np.random.default_rng(0).integers(0, 255, size=(2, 3, 12, 14)).astype(np.uint8)
    p = tw.extract(x, t)
    assert isinstance(p, np.ndarray)
    assert p.dtype == np.uint8
    y = tw.stitch(p.astype(np.float32), t)
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y, x, rtol=1e-6)


def test_extract_from_read_only_memmap(tmp_path):
    arr = np.lib.format.open_memmap(
        tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(1, 1, 30, 30)
    )
    arr[:] = np.arange(900, dtype=np.float32).reshape(1, 1, 30, 30)
    arr.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    t = tw.Tiling((30, 30), window=8, step=8)
    np.testing.assert_array_equal(tw.extract(ro, t, [0])[0], ro[0, :, :8, :8])


def test_extract_selection_and_out_buffer():
    t = tw.Tiling((10, 10), window=4, step=3)
    x = torch.rand(2, 1, 10, 10)
    every = tw.extract(x, t)
    sel = [17, 3, 4, 5, 0]
    assert torch.equal(tw.extract(x, t, sel), every[sel])
    assert torch.equal(tw.extract(x, t, 7), every[7:8])
    assert torch.equal(tw.extract(x, t, slice(2, 9, 3)), every[2:9:3])
    buf = torch.empty(3, 1, 4, 4)
    assert tw.extract(x, t, range(4, 7), out=buf) is buf
    assert torch.equal(buf, every[4:7])


def test_non_contiguous_input():
    base = torch.rand(1, 20, 24, 1)
    x = base.permute(0, 3, 1, 2)  # (1, 1, 20, 24), channels-last style strides
    t = tw.Tiling((20, 24), window=7, step=5)
    assert torch.equal(tw.extract(x, t), naive_extract(x, t))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_virtual_padding_matches_numpy_pad_and_round_trips(mode):
    t = tw.Tiling((3, 9), window=(8, 4), step=(8, 3), pad=mode, pad_value=-1.0)
    x = torch.rand(1, 2, 3, 9, dtype=torch.float64)
    p = tw.extract(x, t)
    np_mode = {"reflect": "reflect", "replicate": "edge", "constant": "constant"}[mode]
    kw = {"constant_values": -1.0} if mode == "constant" else {}
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 3), (0, 0)), mode=np_mode, **kw)
    np.testing.assert_array_equal(p[0].numpy(), padded[0, :, :, 0:4])
    for blend in (tw.blend.uniform(), tw.blend.hann()):
        torch.testing.assert_close(tw.stitch(p, t, blend=blend), x, rtol=1e-12, atol=1e-12)


def test_reflect_padding_wider_than_the_axis():
    t = tw.Tiling((2,), window=9, step=1, pad="reflect")
    p = tw.extract(torch.tensor([[[5.0, 7.0]]]), t)
    assert p[0, 0].tolist() == np.pad([5.0, 7.0], (3, 4), mode="reflect").tolist()


def test_channels_may_change_and_out_is_used():
    t = tw.Tiling((16, 16), window=8, step=4)
    x = torch.rand(1, 1, 16, 16)
    p = tw.extract(x, t)
    out = torch.full((1, 3, 16, 16), 7.0)
    y = tw.stitch(p.expand(-1, 3, -1, -1), t, out=out)
    assert y is out
    torch.testing.assert_close(y, x.expand(1, 3, 16, 16))


def test_explicit_cpu_device_with_cpu_outputs():
    """``device="cpu"`` with CPU outputs: only the explicit-device path, on any machine.

    Stitching GPU outputs into host memory is test_cuda_outputs_stitched_into_host_memory,
    skipped where torch sees no CUDA device.
    """
    t = tw.Tiling((16,), window=8, step=4)
    x = torch.rand(1, 1, 16)
    y = tw.stitch(tw.extract(x, t), t, device="cpu")
    assert y.device.type == "cpu"
    torch.testing.assert_close(y, x)


def test_stitch_into_a_numpy_out_buffer():
    """numpy in gives numpy out, and like extract, stitch fills a numpy ``out=`` in place."""
    t = tw.Tiling((16, 16), window=8, step=4)
    x = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)
    buf = np.full((2, 3, 16, 16), 7.0, np.float32)
    assert tw.stitch(tw.extract(x, t), t, blend=tw.blend.hann(), out=buf) is buf
    np.testing.assert_allclose(buf, x, rtol=1e-6)
    buf64 = np.full((2, 3, 16, 16), 7.0)  # torch outputs, float64 buffer, copy (partition) path
    patches = torch.from_numpy(tw.extract(x, t))
    assert tw.stitch(patches, t, blend=tw.blend.border(2, weight=0.0), out=buf64) is buf64
    np.testing.assert_allclose(buf64, x, rtol=1e-6)


@pytest.mark.parametrize(
    ("out", "error", "match"),
    [
        (np.zeros((1, 1, 16), np.float16), tw.ShapeMismatchError, "dtype float32 or float64"),
        (np.zeros((1, 1, 15), np.float32), tw.ShapeMismatchError, r"shape \(N, C, 16\)"),
        (np.zeros((1, 1, 16), np.float32)[..., ::-1], tw.ParameterError, "positive strides"),
        (np.zeros((1, 1, 16), ">f4"), tw.ParameterError, "native-byte-order"),
        ([[[0.0] * 16]], tw.ParameterTypeError, "torch.Tensor"),
    ],
)
def test_stitch_refuses_unusable_out_buffers(out, error, match):
    t = tw.Tiling((16,), window=8, step=4)
    with pytest.raises(error, match=match) as info:
        tw.stitch(np.ones((len(t), 1, 8), np.float32), t, out=out)
    assert_explains(info.value)


def test_stitch_refuses_a_read_only_numpy_out():
    t = tw.Tiling((16,), window=8, step=4)
    ro = np.zeros((1, 1, 16), np.float32)
    ro.setflags(write=False)
    with pytest.raises(tw.ParameterError, match="writable") as info:
        tw.stitch(np.ones((len(t), 1, 8), np.float32), t, out=ro)
    assert_explains(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_outputs_stitched_into_host_memory():
    t = tw.Tiling((64, 64), window=16, step=12)
    x = torch.rand(1, 1, 64, 64, device="cuda")
    y = tw.stitch(tw.extract(x, t), t, blend=tw.blend.gaussian(), device="cpu")
    assert y.device.type == "cpu"
    torch.testing.assert_close(y, x.cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_outputs_named_when_non_finite_and_stitched_into_numpy():
    t = tw.Tiling((12, 12), window=6, step=3)
    patches = torch.ones(len(t), 1, 6, 6, device="cuda")
    buf = np.zeros((1, 1, 12, 12), np.float32)
    assert tw.stitch(patches, t, out=buf) is buf
    np.testing.assert_array_equal(buf, 1.0)
    patches[4, 0, 3, 3] = float("nan")
    for device in (None, "cpu"):
        with pytest.raises(tw.NonFiniteError, match=r"from window 4 \(start \(3, 3\)\) = nan\."):
            tw.stitch(patches, t, device=device)


def test_large_output_uses_zeroed_huge_page_buffer():
    t = tw.Tiling((1024, 1024), window=256, step=192)
    x = torch.rand(1, 4, 1024, 1024)
    y = tw.stitch(tw.extract(x, t), t, blend=tw.blend.ramp(32))
    torch.testing.assert_close(y, x)


# -- errors --------------------------------------------------------------------------------------
def test_stitch_refuses_gaps():
    t = tw.Tiling((20,), window=4, step=6)
    with pytest.raises(tw.CoverageError, match=r"voxels 4\.\.5 .* are in no window"):
        tw.stitch(torch.ones(len(t), 1, 4), t)


def test_stitch_refuses_zero_total_weight():
    t = tw.Tiling((40,), window=10, step=9)  # core is 10 - 2*2 = 6 < step 9
    with pytest.raises(
        tw.CoverageError, match=r"zero total weight.*step <= window - 2\*border"
    ) as info:
        tw.stitch(torch.ones(len(t), 1, 10), t, blend=tw.blend.border(2, weight=0.0))
    assert_explains(info.value)
    # starts 0, 9, 18, 27, 30: the bands meet at 8..10, 17..19 and 26..28, three separate gaps
    assert "voxels 8..10 on axis 0 zero total weight" in str(info.value)
    assert "(the first of 3 separate gaps, 9 voxels in all)" in str(info.value)


def test_zero_total_weight_single_gap_and_single_voxel():
    border = tw.blend.border(2, weight=0.0)
    t = tw.Tiling((19,), window=10, step=9)  # starts 0, 9: one gap, 8..10
    with pytest.raises(tw.CoverageError, match=r"gives voxels 8\.\.10 on axis 0 zero") as info:
        tw.Stitcher(t, blend=border)
    assert "separate gaps" not in str(info.value)
    t = tw.Tiling((2, 40), window=(2, 10), step=(1, 7))  # bands meet at single voxels
    with pytest.raises(tw.CoverageError, match=r"gives voxel 8 on axis 1 zero.*first of 4") as info:
        tw.Stitcher(t, blend=tw.blend.border((0, 2), weight=0.0))
    assert_explains(info.value)


def test_border_wider_than_half_a_window():
    t = tw.Tiling((40,), window=10, step=5)
    with pytest.raises(tw.ParameterError, match="at most half the window"):
        tw.stitch(torch.ones(len(t), 1, 10), t, blend=tw.blend.border(6, weight=0.5))
    with pytest.raises(tw.ParameterError, match="at most half the window"):
        tw.stitch(torch.ones(len(t), 1, 10), t, blend=tw.blend.ramp(6))


def test_missing_window_is_named():
    t = tw.Tiling((20,), window=8, step=4)
    s = tw.Stitcher(t)
    s.add(torch.ones(3, 1, 8), [0, 1, 3])
    with pytest.raises(tw.MissingWindowError, match=r"1 missing \(windows 2\)"):
        s.result()
    assert s.missing.tolist() == [2]
    assert s.added == 3


def test_window_added_twice():
    t = tw.Tiling((20,), window=8, step=4)
    s = tw.Stitcher(t)
    s.add(torch.ones(1, 1, 8), [0])
    with pytest.raises(tw.MissingWindowError, match="window 0 added twice"):
        s.add(torch.ones(1, 1, 8), [0])
    with pytest.raises(tw.MissingWindowError, match="window 1 added twice"):
        s.add(torch.ones(2, 1, 8), [1, 1])


def test_wrong_window_count_and_shapes():
    t = tw.Tiling((20,), window=8, step=4)
    with pytest.raises(tw.ShapeMismatchError, match="N \\* 4 windows"):
        tw.stitch(torch.ones(5, 1, 8), t)
    with pytest.raises(tw.ShapeMismatchError, match=r"shape \(2, C, 8\)"):
        tw.Stitcher(t).add(torch.ones(2, 1, 7), [0, 1])
    s = tw.Stitcher(t)
    s.add(torch.ones(1, 2, 8), [0])
    with pytest.raises(tw.ShapeMismatchError, match="2 channels"):
        s.add(torch.ones(1, 3, 8), [1])
    with pytest.raises(tw.ShapeMismatchError, match=r"\(N, C, 20\)"):
        tw.extract(torch.ones(1, 21), t)
    with pytest.raises(tw.ShapeMismatchError, match="buffer of shape"):
        tw.extract(torch.ones(1, 1, 20), t, out=torch.empty(2, 1, 8))


T12 = tw.Tiling((12, 12), window=6, step=3)  # windows 4, 5, 7 and 8 all contain voxel (6, 6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_outputs_name_the_window(bad):
    patches = torch.ones(len(T12), 1, 6, 6)
    patches[4, 0, 3, 3] = bad  # window 4 = grid (1, 1), start (3, 3): voxel (6, 6)
    with pytest.raises(tw.NonFiniteError) as info:
        tw.stitch(patches, T12)
    assert isinstance(info.value, FloatingPointError)
    assert_explains(info.value)
    text = str(info.value)
    assert "at (n=0, c=0, voxel=(6, 6))" in text
    assert f"which comes from window 4 (start (3, 3)) = {bad}." in text
    assert "candidate" not in text  # tw.stitch has every output: it names the culprit only
    assert not re.search(r"window [578]\b", text)  # they contain the voxel but are finite


def test_stitch_names_every_culprit_in_any_image():
    patches = np.ones((2 * len(T12), 1, 6, 6), np.float32)
    patches[9 + 4, 0, 3, 3] = np.nan  # image 1, window 4: voxel (6, 6)
    patches[9 + 8, 0, 0, 0] = np.inf  # image 1, window 8 (start (6, 6)): the same voxel
    with pytest.raises(tw.NonFiniteError) as info:
        tw.stitch(patches, T12)
    text = str(info.value)
    assert "at (n=1, c=0, voxel=(6, 6))" in text
    assert "from window 13 (start (3, 3)) = nan, window 17 (start (6, 6)) = inf." in text


def test_outputs_too_large_for_the_result_dtype_are_named():
    t = tw.Tiling((20,), window=8, step=4)
    patches = torch.ones(len(t), 1, 8, dtype=torch.float64)
    patches[2, 0, 1] = 1e300  # voxel 9, also in window 1
    with pytest.raises(tw.NonFiniteError) as info:
        tw.stitch(patches, t, dtype=torch.float32)
    assert "from window 2 (start (8,)) = 1e+300 (too large for torch.float32)." in str(info.value)
    assert "window 1 " not in str(info.value)


def test_overflow_of_finite_outputs_is_explained():
    """Finite outputs whose weighted sum is not finite: no window is to blame."""
    s = tw.Stitcher(T12)
    patches = torch.ones(len(T12), 1, 6, 6)
    s.add(patches, range(len(T12)))
    out = s.result().clone()
    out[0, 0, 6, 6] = float("inf")  # as if the sum had overflowed
    with pytest.raises(tw.NonFiniteError, match="are finite: their weighted sum overflowed") as i:
        s._check_finite(out, patches)
    assert "dtype=torch.float64" in str(i.value)


def test_stitcher_lists_candidate_windows_as_candidates():
    """A Stitcher keeps only sums: it lists the windows that contribute, as candidates."""
    patches = torch.ones(len(T12), 1, 6, 6)
    patches[4, 0, 3, 3] = float("nan")
    s = tw.Stitcher(T12)
    s.add(patches, range(len(T12)))
    with pytest.raises(tw.NonFiniteError) as info:
        s.result()
    assert_explains(info.value)
    text = str(info.value)
    assert "voxel=(6, 6)" in text
    assert "candidate windows" in text
    expected = "window 4 (start (3, 3)), window 5 (start (3, 6)), window 7 (start (6, 3)), "
    assert expected + "window 8 (start (6, 6))." in text
    # with a zero-weight border only window 4 contributes to voxel (6, 6): the others are not
    # listed (their value there is never read)
    s = tw.Stitcher(T12, blend=tw.blend.border(1, weight=0.0))
    s.add(patches, range(len(T12)))
    with pytest.raises(tw.NonFiniteError, match=r"non-finite\): window 4 \(start \(3, 3\)\)\."):
        s.result()


def test_non_finite_in_a_region_is_reported_in_array_coordinates():
    patches = torch.ones(len(T12), 1, 6, 6)
    patches[4, 0, 3, 3] = float("nan")
    s = tw.Stitcher(T12, region=[(5, 9), (5, 9)])
    s.add(patches, range(len(T12)))
    with pytest.raises(tw.NonFiniteError, match=r"voxel=\(6, 6\).*window 4 \(start \(3, 3\)\)"):
        s.result()


@pytest.mark.parametrize(
    ("tiling", "blend", "where"),
    [
        # window 1 (start 4): its first voxel is in a zero-weight border band
        (tw.Tiling((12,), window=6, step=4), tw.blend.border(1, weight=0.0), (1, 0, 0)),
        # the array is 3 voxels, the window 6: padding (1, 2), local voxel 0 is padding
        (tw.Tiling((3,), window=6, step=6, pad="reflect"), tw.blend.uniform(), (0, 0, 0)),
        # window 1 (start 3) is interior: the custom profile's zero end is never read
        (
            tw.Tiling((12,), window=6, step=3),
            tw.blend.custom([0.0, 1.0, 1.0, 1.0, 1.0, 0.0]),
            (1, 0, 5),
        ),
    ],
)
def test_values_under_zero_weight_are_never_read(tiling, blend, where):
    """Documented: NaN/Inf where a window's weight is zero at its ends cannot reach the
    result, so it is neither propagated nor reported."""
    patches = torch.ones(len(tiling), 1, *tiling.window)
    patches[where] = float("nan")
    y = tw.stitch(patches, tiling, blend=blend)
    assert torch.equal(y, torch.ones(1, 1, *tiling.shape))


def test_nan_under_a_positive_border_weight_is_reported():
    t = tw.Tiling((12,), window=6, step=4)
    patches = torch.ones(len(t), 1, 6)
    patches[1, 0, 0] = float("nan")
    with pytest.raises(tw.NonFiniteError, match=r"from window 1 \(start \(4,\)\) = nan"):
        tw.stitch(patches, t, blend=tw.blend.border(1, weight=0.1))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda t: tw.extract([1, 2], t), tw.ParameterTypeError, "torch.Tensor or numpy"),
        (lambda t: tw.extract(torch.ones(1, 1, 20), t, [99]), tw.ParameterError, r"\[0, 4\)"),
        (lambda t: tw.extract(torch.ones(1, 1, 20), t, [[1]]), tw.ParameterTypeError, "1-D"),
        (lambda t: tw.extract(torch.ones(1, 1, 20), t, range(2, 9)), tw.ParameterError, "range"),
        (
            lambda t: list(tw.extract_batches(torch.ones(1, 1, 20), t, 0)),
            tw.ParameterError,
            "batch_size",
        ),
        (lambda t: tw.Stitcher(t, n=0), tw.ParameterError, "positive int"),
        (lambda t: tw.Stitcher("t"), tw.ParameterTypeError, "tilewise.Tiling"),
        (lambda t: tw.Stitcher(t, blend="hann"), tw.ParameterTypeError, "blend recipe"),
        (lambda t: tw.Stitcher(t, dtype=torch.float16), tw.ParameterError, "float32 or"),
        (
            lambda t: tw.Stitcher(t, out=torch.ones(1, 1, 20, dtype=torch.int32)),
            tw.ShapeMismatchError,
            "dtype float32",
        ),
        (
            lambda t: tw.Stitcher(t).add(torch.ones(1, 1, 8, dtype=torch.bool), [0]),
            tw.ParameterTypeError,
            "real-valued",
        ),
        (lambda t: tw.blend.border(-1), tw.ParameterError, "border width"),
        (lambda t: tw.blend.border(2.5), tw.ParameterTypeError, "2.5 of type float"),
        (lambda t: tw.blend.border((1, 2.0)), tw.ParameterTypeError, r"2.0 of type float in"),
        (lambda t: tw.blend.border("2"), tw.ParameterTypeError, "whole number"),
        (lambda t: tw.blend.border(()), tw.ParameterError, "empty sequence"),
        (lambda t: tw.blend.ramp(1.5), tw.ParameterTypeError, "whole number"),
        (lambda t: tw.blend.border(2, weight=-0.5), tw.ParameterError, "weight >= 0"),
        (lambda t: tw.blend.border(2, weight="x"), tw.ParameterTypeError, "number"),
        (lambda t: tw.blend.gaussian(0), tw.ParameterError, "positive fraction"),
        (lambda t: tw.blend.gaussian(float("nan")), tw.ParameterError, "finite"),
        (lambda t: tw.blend.ramp(0), tw.ParameterError, "ramp width"),
        (lambda t: tw.blend.custom([0.0, 0.0]), tw.ParameterError, "positive weight"),
        (lambda t: tw.blend.custom([1.0, -1.0]), tw.ParameterError, ">= 0"),
        (lambda t: tw.blend.custom("abc"), tw.ParameterTypeError, "array of numbers"),
        (
            lambda t: tw.stitch(torch.ones(4, 1, 8), t, blend=tw.blend.custom([1.0] * 5)),
            tw.ShapeMismatchError,
            "weights for window",
        ),
    ],
)
def test_error_paths(call, error, match):
    t = tw.Tiling((20,), window=8, step=4)
    with pytest.raises(error, match=match) as info:
        call(t)
    assert_explains(info.value)


T2D = tw.Tiling((12, 12), window=6, step=3)


@pytest.mark.parametrize(
    ("blend", "error", "match"),
    [
        (tw.blend.border((1, 2, 3), 0.5), tw.ParameterError, r"2 values.*received 3 values"),
        (tw.blend.border((1,), 0.0), tw.ParameterError, r"2 values.*received 1 values \(1,\)"),
        (tw.blend.ramp((1, 1, 1)), tw.ParameterError, r"ramp width: expected a single int or 2"),
        (tw.blend.custom([np.ones(6)] * 3), tw.ShapeMismatchError, r"weights of shape \(6, 6, 6\)"),
        (tw.blend.custom(np.ones((6, 6, 6))), tw.ShapeMismatchError, "weights for window"),
    ],
)
def test_per_axis_blend_parameters_must_match_the_tiled_axes(blend, error, match):
    """Nothing is ignored: a per-axis value for an axis the tiling does not have is refused."""
    with pytest.raises(error, match=match) as info:
        tw.stitch(torch.ones(len(T2D), 1, 6, 6), T2D, blend=blend)
    assert_explains(info.value)


def test_per_axis_border_widths_apply_per_axis():
    plan = tw.Stitcher(T2D, blend=tw.blend.border((0, 1), weight=0.0)).plan
    w = plan.weight(tuple(int(ax.sig[1]) for ax in plan.axes))  # window (1, 1), start (3, 3)
    # axis 1: band 1 of weight 0, cores of neighbours meet at local 1 and 4; axis 0: no band,
    # every voxel of the window is in two windows
    assert w[0].tolist() == [0, 0.25, 0.5, 0.5, 0.25, 0]
    assert w[:, 2].tolist() == [0.5] * 6


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
def test_every_dimensionality_with_every_blend(ndim):
    shape = (9, 10, 11, 7)[:ndim]
    t = tw.Tiling(shape, window=(5, 4, 6, 3)[:ndim], step=(3, 2, 4, 1)[:ndim])
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    for blend in (
        tw.blend.uniform(),
        tw.blend.border(1, weight=0.0),
        tw.blend.gaussian(),
        tw.blend.hann(),
        tw.blend.ramp(1),
    ):
        torch.testing.assert_close(
            tw.stitch(tw.extract(x, t), t, blend=blend), x, rtol=1e-12, atol=1e-12
        )


def test_many_small_windows_take_few_operations():
    """No per-window Python work: operations scale with colour classes, not windows."""
    t = tw.Tiling((512, 512), window=16, step=4)  # 15,625 windows
    s = tw.Stitcher(t)
    calls = list(itertools.product(*(s.plan.pieces(ax, 0, c) for ax, c in enumerate(t.counts))))
    assert len(t) == 15625
    assert len(calls) < 200


# -- regressions found in review -----------------------------------------------------------------
T20 = tw.Tiling((20,), window=8, step=4)


def test_nd_custom_blend_on_a_padded_tiling():
    t = tw.Tiling((5, 8), window=(8, 8), step=(8, 4), pad="reflect")
    w = np.random.default_rng(0).uniform(0.2, 1.0, (8, 8))
    patches = torch.rand(len(t), 1, 8, 8, dtype=torch.float64)
    blend = tw.blend.custom(w)
    torch.testing.assert_close(
        tw.stitch(patches, t, blend=blend), naive_stitch(patches, t, blend, 1), rtol=1e-10, atol=0
    )


def test_nd_custom_coverage_refused_at_construction():
    w = np.ones((4, 4))
    w[:, 0] = w[:, -1] = 0
    t = tw.Tiling((4, 10), window=4, step=(4, 3))
    with pytest.raises(tw.CoverageError, match="zero total weight"):
        tw.Stitcher(t, blend=tw.blend.custom(w, edge_aware=False))


def test_custom_blend_forms_are_distinct():
    a = [1.0, 2.0, 1.0]
    assert tw.blend.custom([np.array(a)]) != tw.blend.custom(np.array(a))
    nested = tw.blend.custom([[1.0, 2.0], [3.0, 4.0]])  # per-axis profiles
    assert nested.nd_weight((2, 2), (False,) * 2, (False,) * 2).tolist() == [[3, 4], [6, 8]]
    nd = tw.blend.custom(np.array([[1.0, 2.0], [3.0, 4.0]]), edge_aware=False)
    assert nd.nd_weight((2, 2), (False,) * 2, (False,) * 2).tolist() == [[1, 2], [3, 4]]


def test_numpy_out_buffers_must_be_writable_native_views():
    t = tw.Tiling((20,), window=8, step=4)
    x = np.ones((1, 1, 20), np.float32)
    with pytest.raises(tw.ParameterError, match="writable, native-byte-order"):
        tw.extract(x, t, out=np.zeros((4, 1, 8), ">f4"))
    ro = np.zeros((4, 1, 8), np.float32)
    ro.setflags(write=False)
    with pytest.raises(tw.ParameterError, match="writable"):
        tw.extract(x, t, out=ro)
    reversed_input = np.arange(20, dtype=np.float32)[::-1].reshape(1, 1, 20)
    np.testing.assert_array_equal(tw.extract(reversed_input, t)[0, 0], np.arange(19, 11, -1))
    big_endian = np.arange(20, dtype=">f4").reshape(1, 1, 20)
    np.testing.assert_array_equal(tw.extract(big_endian, t)[1, 0], np.arange(4, 12))


def test_empty_batches_are_ignored():
    s = tw.Stitcher(T20)
    s.add(torch.ones(0, 3, 8), [])
    s.add(torch.ones(4, 1, 8), range(4))
    assert s.result().shape == (1, 1, 20)


def test_a_refused_batch_writes_nothing():
    s = tw.Stitcher(T20)
    s.add(torch.ones(1, 1, 8), [0])
    with pytest.raises(tw.MissingWindowError):
        s.add(torch.full((3, 1, 8), 5.0), [1, 2, 0])
    assert s.added == 1
    s.add(torch.ones(3, 1, 8), [1, 2, 3])
    assert torch.equal(s.result(), torch.ones(1, 1, 20))


def test_border_of_half_the_window_with_zero_weight_is_refused():
    with pytest.raises(tw.ParameterError, match="leaving a core"):
        tw.stitch(torch.ones(1, 1, 4), tw.Tiling((4,), 4, 4), blend=tw.blend.border(2, 0.0))


def test_pad_value_must_fit_integer_data():
    t = tw.Tiling((3,), window=6, step=6, pad="constant", pad_value=0.5)
    with pytest.raises(tw.ParameterError, match="whole number"):
        tw.extract(np.zeros((1, 1, 3), np.int16), t)
    assert tw.extract(np.zeros((1, 1, 3), np.float32), t)[0, 0].tolist()[0] == 0.5


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: tw.extract(torch.ones(1, 1, 20), (20,)), tw.ParameterTypeError, "Tiling"),
        (lambda: tw.stitch(torch.ones(4, 1, 8), 5), tw.ParameterTypeError, "Tiling"),
        (lambda: tw.Stitcher(T20, device="gpu"), tw.ParameterError, "torch device"),
        (lambda: tw.Stitcher(T20, n=2.0), tw.ParameterTypeError, "an int"),
        (lambda: T20[0].physical_origin(None), tw.ParameterError, "voxel_size"),
        (lambda: T20.windows_containing((25,)), tw.ParameterError, "inside the array"),
        (lambda: tw.Tiling(np.array(10), 2, 1), tw.ParameterTypeError, "sequence"),
        (
            lambda: tw.extract(torch.ones(1, 1, 20), T20, slice(0.0, 1.0)),
            tw.ParameterTypeError,
            "slice",
        ),
        (
            lambda: tw.extract(torch.ones(1, 1, 20), T20, np.array([2**64 - 1], np.uint64)),
            tw.ParameterError,
            str(2**64 - 1),
        ),
    ],
)
def test_more_error_paths(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert_explains(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_device_refused_without_cuda():
    with pytest.raises(tw.ParameterError, match="no CUDA device"):
        tw.Stitcher(T20, device="cuda")


def test_numpy_integer_counts_are_accepted():
    assert tw.Stitcher(T20, n=np.int64(2)).n == 2
    assert len(list(tw.extract_batches(torch.ones(1, 1, 20), T20, np.int64(3)))) == 2


@given(t=tilings(max_axes=3, pad=True), data=st.data())
def test_a_region_is_exactly_that_part_of_the_whole(t, data):
    blend = data.draw(blends(t))
    region = []
    for s in t.shape:
        a = data.draw(st.integers(0, s - 1))
        region.append((a, data.draw(st.integers(a + 1, s))))
    patches = torch.rand(2 * len(t), 2, *t.window, dtype=torch.float64)
    whole = tw.stitch(patches, t, blend=blend)
    part = tw.Stitcher(t, n=2, blend=blend, region=region)
    needed = part.needed
    assert set(needed.tolist()) <= set(range(2 * len(t)))
    part.add(patches[needed], needed)
    sl = tuple(slice(a, b) for a, b in region)
    # the same values; only the order of additions may differ (a last-bit difference)
    torch.testing.assert_close(
        part.result(), whole[(slice(None), slice(None), *sl)], rtol=1e-14, atol=1e-15
    )


def test_region_ignores_other_windows_and_checks_its_own():
    t = tw.Tiling((40,), window=10, step=5)
    s = tw.Stitcher(t, region=[(0, 12)])
    assert s.needed.tolist() == [0, 1, 2]
    s.add(torch.ones(len(t), 1, 10), range(len(t)))  # windows outside are accepted, ignored
    assert s.result().shape == (1, 1, 12)
    s2 = tw.Stitcher(t, region=[(0, 12)])
    s2.add(torch.ones(1, 1, 10), [0])
    with pytest.raises(tw.MissingWindowError, match="windows 1, 2"):
        s2.result()
    with pytest.raises(tw.ParameterError, match="start, stop"):
        tw.Stitcher(t, region=[(5, 50)])


def test_a_weight_of_one_is_not_built_as_a_window_sized_tensor():
    from tilewise._stitch import _WEIGHTS

    t = tw.Tiling((40, 40), window=16, step=16)  # no overlap: every weight is one
    x = torch.rand(1, 1, 40, 40)
    y = tw.stitch(tw.extract(x, t), t)
    torch.testing.assert_close(y, x)
    ones = [w for (plan, *_), (w, one) in _WEIGHTS.items.items() if plan.tiling == t and one]
    assert ones
    assert all(w.numel() == 1 for w in ones)
