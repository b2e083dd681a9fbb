"""Extract and stitch: round trips, partition of unity, reference loop, batching, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tilewise as tw
from strategies import blends, tilings


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
@given(t=tilings(), data=st.data())
def test_round_trip_is_identity_for_every_blend(t, data):
    blend = data.draw(blends(t.window))
    n = data.draw(st.integers(1, 2))
    x = torch.rand(n, 2, *t.shape, dtype=torch.float64)
    y = tw.stitch(tw.extract(x, t), t, blend=blend)
    torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-12)


@given(t=tilings(), data=st.data())
def test_partition_of_unity(t, data):
    """The normalised weights of all windows sum to 1 at every voxel."""
    blend = data.draw(blends(t.window))
    ones = torch.ones(len(t), 1, *t.window, dtype=torch.float64)
    total = tw.stitch(ones, t, blend=blend)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=1e-12, atol=1e-12)


@given(t=tilings(max_axes=3), data=st.data())
def test_matches_naive_reference_on_random_outputs(t, data):
    blend = data.draw(blends(t.window))
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
    blend = data.draw(blends(t.window))
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


def test_result_on_another_device_via_meta_free_cpu_path():
    t = tw.Tiling((16,), window=8, step=4)
    y = tw.stitch(torch.ones(len(t), 1, 8), t, device="cpu")
    assert y.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_outputs_stitched_into_host_memory():
    t = tw.Tiling((64, 64), window=16, step=12)
    x = torch.rand(1, 1, 64, 64, device="cuda")
    y = tw.stitch(tw.extract(x, t), t, blend=tw.blend.gaussian(), device="cpu")
    assert y.device.type == "cpu"
    torch.testing.assert_close(y, x.cpu())


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
    with pytest.raises(tw.CoverageError, match=r"zero total weight.*step <= window - 2\*border"):
        tw.stitch(torch.ones(len(t), 1, 10), t, blend=tw.blend.border(2, weight=0.0))


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


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_outputs_name_the_window(bad):
    t = tw.Tiling((12, 12), window=6, step=3)
    patches = torch.ones(len(t), 1, 6, 6)
    patches[4, 0, 3, 3] = bad  # window 4 = grid (1, 1), start (3, 3): voxel (6, 6)
    with pytest.raises(tw.NonFiniteError, match=r"voxel=\(6, 6\).*window\(s\) \[.*4.*\]") as info:
        tw.stitch(patches, t)
    assert isinstance(info.value, FloatingPointError)


def test_values_under_zero_weight_are_never_read():
    t = tw.Tiling((12,), window=6, step=4)
    patches = torch.ones(len(t), 1, 6)
    patches[1, 0, 0] = float("nan")  # in window 1's zero-weight border band
    y = tw.stitch(patches, t, blend=tw.blend.border(1, weight=0.0))
    assert torch.equal(y, torch.ones(1, 1, 12))


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
    assert "Fix:" in str(info.value)


def test_blends_are_hashable_values():
    assert tw.blend.border(3, weight=0.0) == tw.blend.border(3, weight=0.0)
    assert tw.blend.border(3, weight=0.0) != tw.blend.border(3, weight=0.1)
    assert len({tw.blend.hann(), tw.blend.hann(), tw.blend.uniform()}) == 2
    assert tw.blend.custom([1.0, 2.0]) == tw.blend.custom(np.array([1.0, 2.0]))
    assert "border" in repr(tw.blend.border(3, weight=0.0))
    assert "custom" in repr(tw.blend.custom([1.0, 2.0]))


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
    with pytest.raises(error, match=match):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_device_refused_without_cuda():
    with pytest.raises(tw.ParameterError, match="no CUDA device"):
        tw.Stitcher(T20, device="cuda")


def test_numpy_integer_counts_are_accepted():
    assert tw.Stitcher(T20, n=np.int64(2)).n == 2
    assert len(list(tw.extract_batches(torch.ones(1, 1, 20), T20, np.int64(3)))) == 2


@given(t=tilings(max_axes=3), data=st.data())
def test_a_region_is_exactly_that_part_of_the_whole(t, data):
    blend = data.draw(blends(t.window))
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
