"""Remote data through fsspec: a real S3-protocol server (moto) and a plain HTTP server, both
started by the tests on loopback."""

from __future__ import annotations

import functools
import http.server
import logging
import threading

import numpy as np
import pytest
import torch

import tilewise as tw

zarr = pytest.importorskip("zarr")
moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pytest.importorskip("aiohttp")

SECRET = "s3cr3t-key-never-shown"
T = tw.Tiling((20, 24), window=8, step=6)


@pytest.fixture(scope="module")
def s3():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("bucket")
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))

    class Quiet(http.server.ThreadingHTTPServer):
        daemon_threads = True

    server = Quiet(("127.0.0.1", 0), lambda *a: handler(*a))
    server.RequestHandlerClass.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def image():
    return np.random.default_rng(0).random((1, 1, 20, 24), dtype=np.float32)


def net(z):
    return torch.cat([z, 2 * z], 1)


def test_s3_input_and_output_round_trip(s3):
    x = image()
    src = zarr.create_array("s3://bucket/in.zarr", shape=x.shape, chunks=(1, 1, 10, 12), dtype="f4")
    src[:] = x
    out = tw.predict(
        net, "s3://bucket/in.zarr", T, out="s3://bucket/out.zarr", chunks=(10, 12), block=(10, 12)
    )
    back = tw.open_array("s3://bucket/out.zarr")
    np.testing.assert_allclose(np.asarray(back), net(torch.from_numpy(x)).numpy(), rtol=1e-6)
    assert out.shape == (1, 2, 20, 24)
    assert len(s3.ls("bucket/out.zarr/.tilewise/done")) == 4
    assert not s3.exists("bucket/out.zarr/.tilewise/lock")
    again = tw.predict(
        net,
        "s3://bucket/in.zarr",
        T,
        out="s3://bucket/out.zarr",
        chunks=(10, 12),
        block=(10, 12),
        return_info=True,
    )
    assert again.blocks_skipped == 4


def test_http_input_is_read_over_the_network(http_root):
    root, url = http_root
    x = image()
    z = zarr.create_array(root / "in.zarr", shape=x.shape, chunks=(1, 1, 10, 12), dtype="f4")
    z[:] = x
    arr = tw.open_array(f"{url}/in.zarr", axes="ncyx")
    np.testing.assert_array_equal(arr[0, 0, 3:7, 5:9], x[0, 0, 3:7, 5:9])
    y = tw.predict(net, f"{url}/in.zarr", T)
    torch.testing.assert_close(y, net(torch.from_numpy(x)))


def test_bad_urls_give_clear_errors_and_write_nothing(s3, http_root):
    _, url = http_root
    x = torch.from_numpy(image())
    with pytest.raises(tw.SourceNotFoundError, match="no zarr metadata"):
        tw.open_array("s3://no-such-bucket/in.zarr")
    with pytest.raises(tw.ParameterError, match="protocol"):
        tw.open_array("nosuchproto://host/in.zarr")
    with pytest.raises(tw.ParameterError, match="bucket does not exist") as missing:
        tw.predict(net, x, T, out="s3://no-such-bucket/out.zarr")
    with pytest.raises(tw.ParameterError, match="read-only") as readonly:
        tw.predict(net, x, T, out=f"{url}/out.zarr")
    for err in (missing, readonly):
        assert SECRET not in str(err.value)
    assert not s3.exists("bucket/never.zarr")
