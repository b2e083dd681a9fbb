"""Pictures: every function writes a real PNG, draws the right data, and refuses bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tilewise as tw
from strategies import blends, tilings
from tilewise._errors import ParameterError, ParameterTypeError, ShapeMismatchError

pytest.importorskip("matplotlib")

from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.image import imread

from tilewise import plot


def check_png(path, min_kb: float = 8.0) -> np.ndarray:
    """The file is a real, non-trivial PNG: big enough and with many distinct colours."""
    assert path.stat().st_size > min_kb * 1024, path.stat().st_size
    img = imread(path)
    assert img.ndim == 3
    assert min(img.shape[:2]) > 200
    rgb = (img[..., :3] * 255).astype(np.int64)
    colours = np.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2])
    assert len(colours) > 10, len(colours)
    return img


def rng_volume(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def seam_xs(ax) -> list[float]:
    """x positions of the vertical seam lines (axvline) of an Axes."""
    return sorted(
        float(line.get_xdata()[0])
        for line in ax.lines
        if line.get_xdata()[0] == line.get_xdata()[1] and line.get_color() == plot.SEAM_COLOUR
    )


# -- layout ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "window", "step", "kwargs"),
    [
        ((100, 130), 32, 24, {}),  # 2-D, shown whole
        ((60, 200, 150), 32, 16, {"border": 4}),  # 3-D, middle of axis 0, every core
        ((60, 200, 150), 32, 16, {"axis": 2, "index": 7}),  # 3-D, a Z-Y plane
        ((6, 20, 64, 64), (3, 8, 24, 24), (2, 6, 20, 20), {"axis": (0, 1), "index": (1, 5)}),
        ((30,), 10, 8, {"windows": [1], "border": 2}),  # 1-D: one bar per window
    ],
)
def test_layout_writes_a_png(tmp_path, shape, window, step, kwargs):
    t = tw.Tiling(shape, window=window, step=step)
    fig = plot.layout(t, path=tmp_path / "l.png", **kwargs)
    assert isinstance(fig, Figure)
    check_png(tmp_path / "l.png")
    assert fig.axes[0].get_title().startswith(f"{len(t)} windows, counts {t.counts}")


def test_layout_over_an_image_with_highlighted_windows(tmp_path):
    t = tw.Tiling((40, 100, 120), window=32, step=24)
    image = torch.rand(2, 1, 40, 100, 120)
    fig = plot.layout(
        t,
        image=image,
        sample=1,
        windows=[t.flat_index((1, 1, 1))],
        border=3,
        path=tmp_path / "l.png",
    )
    check_png(tmp_path / "l.png")
    shown = fig.axes[0].images[0].get_array()
    # the slice goes through the highlighted window's middle: it starts at 8 (stepped back)
    assert "axis 0 = 23" in fig.axes[0].get_title()
    np.testing.assert_allclose(shown, image[1, 0, 23].double().numpy())
    assert "1 of 1 highlighted" in fig.axes[0].get_title()


def test_layout_accepts_a_ready_slice_and_an_axes(tmp_path):
    t = tw.Tiling((40, 100, 120), window=32, step=24)
    fig = Figure()
    ax = fig.subfigures(1, 2)[1].add_subplot()
    out = plot.layout(t, image=rng_volume((100, 120)), index=5, ax=ax, path=tmp_path / "l.png")
    assert out is fig
    check_png(tmp_path / "l.png", min_kb=4)


def test_layout_outlines_every_window_edge_once():
    t = tw.Tiling((64, 64), window=16, step=8)
    fig = plot.layout(t)
    segments = fig.axes[0].collections[0].get_segments()
    # edges at 0, 8, ..., 64 on each axis, each one merged segment across the array
    assert len(segments) == 2 * 9
    assert {tuple(np.round(s[:, 0], 1)) for s in segments if s[0, 0] == s[1, 0]} == {
        (x - 0.5, x - 0.5) for x in range(0, 65, 8)
    }


# -- weights ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("t", "blend", "kwargs"),
    [
        (tw.Tiling((100, 130), window=32, step=24), tw.blend.border(4, weight=0.0), {}),
        (tw.Tiling((40, 60, 70), window=24, step=16), tw.blend.gaussian(0.125), {"window": 5}),
        (tw.Tiling((40, 60, 70), window=24, step=16), tw.blend.hann(), {"axis": 1}),
        (
            tw.Tiling((5, 12, 30, 30), window=(3, 8, 16, 16), step=(2, 6, 12, 12)),
            tw.blend.ramp(1),
            {"axis": (0, 2)},
        ),
    ],
)
def test_weights_sum_panel_is_one(tmp_path, t, blend, kwargs):
    fig = plot.weights(t, blend, path=tmp_path / "w.png", **kwargs)
    check_png(tmp_path / "w.png")
    own = np.asarray(fig.axes[0].images[0].get_array())
    total = np.asarray(fig.axes[1].images[0].get_array())
    assert np.abs(total - 1.0).max() <= 4 * np.finfo(np.float64).eps
    assert 0.0 <= own.min() <= own.max() <= 1.0 + 1e-12
    assert "1 everywhere" in fig.axes[1].get_title()


def test_weights_window_panel_is_the_stitching_weight():
    t = tw.Tiling((40, 50), window=16, step=12)
    blend = tw.blend.border(3, weight=0.25)
    fig = plot.weights(t, blend, window=t.flat_index((1, 2)))
    plan = tw._stitch.weight_plan(t, blend)
    sigs = (int(plan.axes[0].sig[1]), int(plan.axes[1].sig[2]))
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), plan.weight(sigs))


def test_weights_of_a_non_separable_custom_blend():
    w = np.random.default_rng(1).random((12, 12)) + 0.1
    t = tw.Tiling((30, 40), window=12, step=9)
    fig = plot.weights(t, tw.blend.custom(w))
    total = np.asarray(fig.axes[1].images[0].get_array())
    assert np.abs(total - 1.0).max() < 1e-12


@pytest.mark.parametrize(
    "t", [tw.Tiling((30,), window=10, step=8), tw.Tiling((40, 60, 70), window=24, step=16)]
)
def test_weight_profiles_sum_to_one_along_every_axis(tmp_path, t):
    fig = plot.weights(t, tw.blend.hann(), profiles=True, path=tmp_path / "p.png")
    check_png(tmp_path / "p.png")
    sums = fig.axes[1].lines
    assert len(sums) == t.ndim
    for line, size in zip(sums, t.shape, strict=True):
        y = np.asarray(line.get_ydata())
        assert len(y) == size
        assert np.abs(y - 1.0).max() <= 4 * np.finfo(np.float64).eps


@settings(max_examples=15)
@given(data=st.data())
def test_weights_sum_is_one_for_any_tiling_and_blend(data):
    t = data.draw(tilings(max_axes=3))
    blend = data.draw(blends(t.window))
    fig = plot.weights(t, blend, profiles=t.ndim == 1)
    if t.ndim == 1:
        total = np.asarray(fig.axes[1].lines[0].get_ydata())
    else:
        total = np.asarray(fig.axes[1].images[0].get_array())
    assert np.abs(total - 1.0).max() < 1e-12


def test_weights_draws_into_two_axes():
    fig = Figure()
    axes = fig.subplots(1, 2)
    t = tw.Tiling((30, 30), window=12, step=9)
    assert plot.weights(t, tw.blend.uniform(), ax=axes) is fig  # an array of Axes
    with pytest.raises(ParameterTypeError, match=r"ax: expected a sequence of 2 matplotlib Axes"):
        plot.weights(t, tw.blend.uniform(), ax=axes[0])


# -- seams -----------------------------------------------------------------------------------------
def net_outputs(t: tw.Tiling, shape, blend):
    torch.manual_seed(0)
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    conv = torch.nn.Conv3d if len(shape) == 3 else torch.nn.Conv2d
    net = conv(1, 2, 5, padding=2, dtype=torch.float64)
    with torch.no_grad():
        return tw.stitch(net(tw.extract(x, t)), t, blend=blend), net(x)


@pytest.mark.parametrize("shape", [(64, 80), (24, 60, 60)])
def test_seams_maps_the_difference(tmp_path, shape):
    t = tw.Tiling(shape, window=20, step=16)
    tiled, whole = net_outputs(t, shape, tw.blend.uniform())
    fig = plot.seams(tiled, whole, tiling=t, border=2, path=tmp_path / "s.png")
    check_png(tmp_path / "s.png")
    ax = fig.axes[0]
    assert isinstance(ax.images[0].norm, LogNorm)
    assert len(fig.axes) == 2  # the map and its colorbar
    top = float((tiled - whole).abs().max())
    assert ax.get_title().startswith(f"max |tiled - whole| = {top:.3g}")
    key = (0, slice(None), 12) if len(shape) == 3 else (0, slice(None))
    expect = (tiled - whole).abs()[key].amax(dim=0).numpy()
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown[expect > 0], expect[expect > 0])
    assert shown.min() == expect[expect > 0].min()  # exact zeros at the bottom of the scale


def test_seams_with_a_zero_weight_border_is_exact_and_handles_zeros_and_nan(tmp_path):
    shape = (60, 60)
    t = tw.Tiling(shape, window=24, step=20)
    tiled, whole = net_outputs(t, shape, tw.blend.border(2, weight=0.0))
    fig = plot.seams(tiled.numpy(), whole.numpy(), tiling=t, path=tmp_path / "s.png")
    assert float(fig.axes[0].get_title().split("=")[1].split()[0]) < 1e-12
    fig = plot.seams(whole, whole, path=tmp_path / "same.png")
    assert fig.axes[0].get_title().startswith("max |tiled - whole| = 0")
    broken = whole.clone()
    broken[0, 1, 5, 5] = float("nan")
    fig = plot.seams(broken, whole, path=tmp_path / "nan.png")
    assert "1 NaN" in fig.axes[0].get_title()


def test_seams_of_1d_arrays_and_slices(tmp_path):
    t = tw.Tiling((50,), window=12, step=10)
    a = np.random.default_rng(0).random((1, 1, 50))
    fig = plot.seams(a + 1e-6 * a, a, tiling=t, border=1, path=tmp_path / "s1.png")
    check_png(tmp_path / "s1.png")
    assert fig.axes[0].get_yscale() == "log"
    fig = plot.seams(a[0, 0, :40].reshape(5, 8), np.zeros((5, 8)))
    assert fig.axes[0].images[0].get_array().shape == (5, 8)


# -- kept ------------------------------------------------------------------------------------------
def test_kept_2d(tmp_path):
    img = np.zeros((1, 1, 64, 64), np.float32)
    lab = np.full((1, 64, 64), -1)
    lab[0, 10:14, 10:30] = 0
    lab[0, 50, 40:44] = 1
    t = tw.Tiling((64, 64), window=16, step=8)
    r = tw.clean(img, lab, t, border=2)
    fig = plot.kept(r, t, labels=lab, path=tmp_path / "k.png")
    check_png(tmp_path / "k.png")
    assert (
        fig.axes[0].get_title()
        == f"kept {r.report.kept} of 49 windows crossing the array (border 2)"
    )
    names = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert names == ["kept", "dropped", "kept core", "class 0", "class 1"]


def test_kept_3d_from_indices_and_several_images(tmp_path):
    vol = np.zeros((2, 1, 40, 100, 90), np.float32)
    lab = np.full((2, 40, 100, 90), -1, np.int8)
    lab[1, 20, 30:50, 20:60] = 3
    t = tw.Tiling((40, 100, 90), window=24, step=12)
    r = tw.clean(torch.from_numpy(vol), torch.from_numpy(lab), t, border=3)
    fig = plot.kept(r, t, labels=torch.from_numpy(lab), sample=1, index=20, path=tmp_path / "k.png")
    check_png(tmp_path / "k.png")
    title = fig.axes[0].get_title()
    assert title.startswith(f"kept {r.report.kept} of ")
    assert f"{r.report.kept} of {len(t)} kept in all; border 3" in title
    fig = plot.kept(r.indices - len(t), t, index=20, border=3)  # window indices of image 1
    assert fig.axes[0].get_title().startswith(f"kept {r.report.kept} of ")
    assert fig.axes[0].get_title().endswith("; border 3)")
    fig = plot.kept(r, t, index=20)  # image 0 has no labels
    assert fig.axes[0].get_title().startswith("kept 0 of ")


def test_kept_1d(tmp_path):
    lab = np.full((1, 50), -1)
    lab[0, 3] = 1
    t = tw.Tiling((50,), window=10, step=8)
    r = tw.clean(np.zeros((1, 1, 50)), lab, t)
    fig = plot.kept(r, t, labels=lab, path=tmp_path / "k1.png")
    check_png(tmp_path / "k1.png")
    assert fig.axes[0].get_title() == "kept 1 of 6 windows crossing the array"


def test_kept_refuses_another_tiling():
    img = np.zeros((1, 1, 32, 32), np.float32)
    lab = np.full((1, 32, 32), -1)
    lab[0, 3, 3] = 1
    r = tw.clean(img, lab, tw.Tiling((32, 32), window=8, step=4))
    with pytest.raises(ShapeMismatchError, match=r"tiling: expected the tiling the clean result"):
        plot.kept(r, tw.Tiling((32, 32), window=8, step=8))
    with pytest.raises(ParameterError, match=r"sample: expected a value in \[0, 1\)"):
        plot.kept(r, tw.Tiling((32, 32), window=8, step=4), sample=1)


# -- overlay ---------------------------------------------------------------------------------------
def paper_like(shape=(20, 236, 236)):
    _, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    wave = np.sin(x / 9.0) * np.cos(y / 13.0)
    img = (wave + 0.3 * np.random.default_rng(0).standard_normal(shape))[None, None]
    fil = np.exp(-((wave - 0.8) ** 2) / 0.05)
    prob = np.stack([1 - fil, fil])[None]
    lab = np.full((1, *shape), -1, np.int8)
    mid = shape[0] // 2
    lab[0, mid, 30:40, 50:120] = 0
    lab[0, mid, 100:200, 100:104] = 1
    return img.astype(np.float32), prob.astype(np.float32), lab


def test_overlay_is_fig_2a(tmp_path):
    img, prob, lab = paper_like()
    t = tw.Tiling(img.shape[2:], window=(20, 128, 128), step=(20, 108, 108))
    fig = plot.overlay(
        img, prob, labels=lab, tiling=t, blend_border=(0, 10, 10), index=10, path=tmp_path / "o.png"
    )
    check_png(tmp_path / "o.png", min_kb=50)
    ax = fig.axes[0]
    assert seam_xs(ax) == [117.5]  # cores 10..118 and 118..236 meet at voxel edge 118
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == ["class 0", "class 1", "window", "seam"]
    heat = ax.images[1].get_array()
    np.testing.assert_allclose(heat[..., 3], 0.75 * prob[0, 1, 10], rtol=1e-6)


def test_overlay_from_2d_slices_and_torch(tmp_path):
    img, prob, lab = paper_like((3, 120, 140))
    t = tw.Tiling((120, 140), window=48, step=40)
    fig = plot.overlay(
        torch.from_numpy(img[0, 0, 1]),
        torch.from_numpy(prob[0, 1, 1]).to(torch.bfloat16),
        labels=lab[0, 1],
        tiling=t,
        path=tmp_path / "o2.png",
    )
    check_png(tmp_path / "o2.png", min_kb=30)
    # uniform blend: seams in the middle of each overlap (window starts 0, 40, 80, 92)
    assert seam_xs(fig.axes[0]) == [43.5, 83.5, 109.5]


def test_overlay_reads_only_the_slice_of_a_zarr_array(tmp_path):
    zarr = pytest.importorskip("zarr")
    img, prob, _ = paper_like((6, 64, 64))
    z = zarr.create_array(
        tmp_path / "p.zarr", shape=prob.shape, chunks=(1, 1, 1, 64, 64), dtype="float32"
    )
    z[:] = prob
    fig = plot.overlay(img, z, index=4, channel=0)
    np.testing.assert_allclose(fig.axes[0].images[1].get_array()[..., 3], 0.75 * prob[0, 0, 4])


def test_seam_positions():
    t = tw.Tiling((236, 720), window=128, step=108)
    zero = plot.seam_positions(t, tw.blend.border(10, weight=0.0))
    assert zero[0].tolist() == [118.0]
    assert zero[1].tolist() == [118.0, 226.0, 334.0, 442.0, 550.0, 630.0]  # last: stepped back
    uniform = plot.seam_positions(t, tw.blend.uniform())
    assert uniform[1].tolist() == [118.0, 226.0, 334.0, 442.0, 550.0, 630.0]
    # overlapping cores of a ramp: still where the hand-over balances, in the middle
    assert plot.seam_positions(tw.Tiling((20,), window=12, step=8), tw.blend.ramp(3))[
        0
    ].tolist() == [10.0]
    with pytest.raises(tw.CoverageError):
        plot.seam_positions(tw.Tiling((40,), window=12, step=10), tw.blend.border(2, weight=0.0))


# -- errors ----------------------------------------------------------------------------------------
def test_bad_axis_and_index():
    t3 = tw.Tiling((20, 30, 40), window=10, step=8)
    t2 = tw.Tiling((30, 40), window=10, step=8)
    t4 = tw.Tiling((4, 5, 30, 40), window=(2, 2, 10, 10), step=(2, 2, 8, 8))
    with pytest.raises(ParameterError, match=r"axis: expected 1 tiled axis to hold fixed .*Fix: "):
        plot.layout(t3, axis=(0, 1))
    with pytest.raises(ParameterError, match=r"axis: .*received 3"):
        plot.layout(t3, axis=3)
    with pytest.raises(ParameterError, match=r"axis: expected 0 tiled axes.*leave axis"):
        plot.layout(t2, axis=0)
    with pytest.raises(ParameterError, match=r"axis: expected 2 tiled axes.*axis=\(0, 1\)"):
        plot.layout(t4, axis=0)
    with pytest.raises(ParameterError, match=r"axis: expected distinct axes"):
        plot.layout(t4, axis=(1, -3))
    with pytest.raises(ParameterError, match=r"index: expected a position in \[0, 20\) on axis 0"):
        plot.layout(t3, index=20)
    with pytest.raises(ParameterError, match=r"index: expected no index"):
        plot.layout(t2, index=3)
    with pytest.raises(ParameterTypeError, match=r"index: expected an int or a sequence of ints"):
        plot.layout(t3, index=2.5)
    with pytest.raises(ParameterError, match=r"index: expected a slice through window 0"):
        plot.weights(t3, tw.blend.uniform(), window=0, index=15)
    with pytest.raises(ParameterError, match=r"axis/index: expected no slice for 1-D profiles"):
        plot.weights(t3, tw.blend.uniform(), profiles=True, axis=0)


def test_bad_shapes_and_values():
    t = tw.Tiling((20, 30, 40), window=10, step=8)
    with pytest.raises(ShapeMismatchError, match=r"image: expected shape \(N, C, 20, 30, 40\) or "):
        plot.layout(t, image=np.zeros((1, 1, 20, 30, 41)))
    with pytest.raises(ShapeMismatchError, match=r"image: .*received shape \(20, 30, 40\)"):
        plot.layout(t, image=np.zeros((20, 30, 40)))
    with pytest.raises(ParameterError, match=r"sample: expected a value in \[0, 1\)"):
        plot.layout(t, image=np.zeros((1, 1, 20, 30, 40)), sample=1)
    with pytest.raises(ParameterError, match=r"windows: expected window indices in \[0, 60\)"):
        plot.layout(t, windows=[3, 60])
    with pytest.raises(ParameterError, match=r"border: expected less than half the window"):
        plot.layout(t, border=5)
    with pytest.raises(ParameterTypeError, match=r"tiling: expected a tw.Tiling"):
        plot.layout((20, 30, 40))
    with pytest.raises(ShapeMismatchError, match=r"tiled/whole: expected two arrays of one shape"):
        plot.seams(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 9)))
    with pytest.raises(ShapeMismatchError, match=r"tiled: expected shape \(N, C, 20, 30, 40\)"):
        plot.seams(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)), tiling=t)
    with pytest.raises(ParameterError, match=r"border: expected a tiling to draw cores of"):
        plot.seams(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)), border=1)
    img = np.zeros((1, 1, 20, 30, 40))
    with pytest.raises(ParameterError, match=r"channel: expected a value in \[0, 1\)"):
        plot.overlay(img, img)
    with pytest.raises(
        ShapeMismatchError, match=r"probabilities: .* or the shown slice \(30, 40\)"
    ):
        plot.overlay(img, np.zeros((30, 41)), channel=0)
    with pytest.raises(ParameterError, match=r"image: expected an image or volume with 2 to 4"):
        plot.overlay(np.zeros((1, 1, 50)), np.zeros((1, 2, 50)))
    with pytest.raises(ParameterError, match=r"border width: expected at most half the window"):
        plot.overlay(img, img, tiling=t, blend_border=5, channel=0)
    with pytest.raises(ParameterTypeError, match=r"blend: expected a tw.blend recipe"):
        plot.weights(t, "hann")


def test_lazy_import_no_pyplot_and_a_missing_matplotlib_names_the_extra():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import tilewise as tw
        from tilewise import plot
        print("matplotlib" in sys.modules)
        t = tw.Tiling((40, 40), window=16, step=12)
        plot.layout(t)
        plot.weights(t, tw.blend.hann())
        plot.seams(np.zeros((1, 1, 40, 40)), np.ones((1, 1, 40, 40)), tiling=t)
        plot.overlay(np.zeros((40, 40)), np.ones((40, 40)), tiling=t)
        print("matplotlib.pyplot" in sys.modules)
        sys.modules["matplotlib"] = None  # as if it were not installed
        try:
            plot.layout(t)
        except ImportError as e:
            print(e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, pyplot, error = out.stdout.strip().splitlines()
    assert imported == "False"  # importing tilewise.plot does not import matplotlib
    assert pyplot == "False"  # figures are made on the Agg canvas, never through pyplot
    assert error == (
        "tilewise.plot.layout needs the optional package 'matplotlib', which is not installed. "
        "Fix: pip install 'tilewise[plot]'."
    )
