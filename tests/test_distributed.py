"""predict on a real dask.distributed LocalCluster: same result, lost workers, restarts."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest
import torch

import tilewise as tw
from nets import Exploding, Sleepy, conv3d

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

SHAPE = (1, 1, 40, 44, 36)
T = tw.Tiling(SHAPE[2:], window=16, step=12)
SMALL = {"chunks": (8, 8, 8), "block": (16, 16, 16)}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    x = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    path = tmp_path_factory.mktemp("data") / "in.zarr"
    z = zarr.create_array(path, shape=SHAPE, chunks=(1, 1, 16, 16, 16), dtype="f4")
    z[:] = x
    return x, path


@pytest.fixture(scope="module")
def reference(volume, tmp_path_factory):
    _, path = volume
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    return tw.predict(conv3d(), path, T, out=out, **SMALL)[:]


def test_distributed_equals_single_process(client, volume, reference, tmp_path):
    _, path = volume
    info = tw.predict(
        tw.ModelFactory(conv3d),
        path,
        T,
        out=tmp_path / "o.zarr",
        client=client,
        return_info=True,
        **SMALL,
    )
    np.testing.assert_array_equal(info.output[:], reference)  # bit-identical
    assert info.blocks == 27
    assert info.windows_run >= info.windows
    again = tw.predict(
        tw.ModelFactory(conv3d),
        path,
        T,
        out=tmp_path / "o.zarr",
        client=client,
        return_info=True,
        **SMALL,
    )
    assert again.blocks_skipped == 27  # nothing is written twice


def test_workers_with_several_threads_give_the_same_result(volume, reference, tmp_path):
    _, path = volume
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=4, processes=False, dashboard_address=":0"
    )
    with distributed.Client(cluster) as threaded:
        out = tw.predict(conv3d(), path, T, out=tmp_path / "o.zarr", client=threaded, **SMALL)
        np.testing.assert_array_equal(out[:], reference)  # rows at once share one model
    cluster.close()


def test_models_travel_as_files_and_objects(client, volume, reference, tmp_path):
    _, path = volume
    exported = tmp_path / "net.pt2"
    example = (torch.ones(2, 1, 16, 16, 16),)
    batch = torch.export.Dim("batch")
    torch.export.save(
        torch.export.export(conv3d(), example, dynamic_shapes=({0: batch},)), exported
    )
    a = tw.predict(str(exported), path, T, out=tmp_path / "a.zarr", client=client, **SMALL)
    np.testing.assert_allclose(a[:], reference, rtol=0, atol=1e-6)
    script = tmp_path / "net.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated in torch but still loads
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(conv3d()), script)
    s = tw.predict(str(script), path, T, out=tmp_path / "s.zarr", client=client, **SMALL)
    np.testing.assert_allclose(s[:], reference, rtol=0, atol=1e-6)
    weights = tmp_path / "w.pt"
    torch.save(conv3d().state_dict(), weights)
    factory = tw.ModelFactory(conv3d, seed=1, state_dict=weights)  # weights override seed 1
    b = tw.predict(factory, path, T, out=tmp_path / "b.zarr", client=client, **SMALL)
    np.testing.assert_allclose(b[:], reference, rtol=0, atol=1e-6)
    c = tw.predict(conv3d(), path, T, out=tmp_path / "c.zarr", client=client, **SMALL)
    np.testing.assert_array_equal(c[:], reference)


def test_a_worker_killed_mid_run_changes_nothing(client, volume, reference, tmp_path):
    _, path = volume
    out = tmp_path / "o.zarr"
    done = out / ".tilewise" / "done"
    pids = list(client.run(os.getpid).values())
    result = {}

    def run():
        result["out"] = tw.predict(Sleepy(0.05), path, T, out=out, client=client, **SMALL)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not done.exists() or len(os.listdir(done)) < 4):
        time.sleep(0.05)
    os.kill(pids[0], signal.SIGKILL)  # the nanny restarts it; its tasks are rerun elsewhere
    thread.join(timeout=240)
    assert not thread.is_alive()
    np.testing.assert_array_equal(result["out"][:], reference)
    assert len(os.listdir(done)) == 27


def test_a_failed_run_resumes_to_the_same_result(client, volume, reference, tmp_path):
    x, _ = volume
    marked = x.copy()
    marked[0, 0, 35, 40, 30] = 100.0  # windows holding this voxel make the model fail
    path = tmp_path / "marked.zarr"
    z = zarr.create_array(path, shape=SHAPE, chunks=(1, 1, 16, 16, 16), dtype="f4")
    z[:] = marked
    out = tmp_path / "o.zarr"
    with pytest.raises(RuntimeError, match="simulated failure"):
        tw.predict(Exploding(50.0), path, T, out=out, client=client, **SMALL)
    finished = len(os.listdir(out / ".tilewise" / "done"))  # rows running at the failure
    assert 0 < finished < 27  # were waited for: nothing of that run is written after it
    time.sleep(1.0)
    assert len(os.listdir(out / ".tilewise" / "done")) == finished
    info = tw.predict(Exploding(1000.0), path, T, out=out, client=client, return_info=True, **SMALL)
    assert info.blocks_skipped == finished
    expected = tw.predict(conv3d(), path, T, out=tmp_path / "ref2.zarr", **SMALL)[:]
    np.testing.assert_array_equal(info.output[:], expected)


def test_local_cluster_on_request(volume, reference, tmp_path, capsys):
    _, path = volume
    out = tw.predict(
        tw.ModelFactory(conv3d),
        path,
        T,
        out=tmp_path / "o.zarr",
        cluster="local",
        workers=1,
        progress=True,
        **SMALL,
    )
    err = capsys.readouterr().err
    assert "dask dashboard: http://" in err  # where to watch the tasks
    assert f"{len(T)}/" in err or "windows" in err
    np.testing.assert_array_equal(out[:], reference)


def test_distributed_needs_an_output_path(client, volume, tmp_path):
    x, _ = volume
    with pytest.raises(tw.ParameterError, match="output path or URL"):
        tw.predict(conv3d(), torch.from_numpy(x), T, client=client)
    with pytest.raises(tw.ParameterError, match=r"distributed\.Client"):
        tw.predict(
            conv3d(), torch.from_numpy(x), T, out=tmp_path / "x.zarr", client="localhost:8786"
        )
