"""The `triton_client.py` that `edge-fer deploy triton` writes, run as a user runs it.

The server is a small KServe v2 endpoint in a thread (tritonclient's binary tensor extension and
Triton's classification extension) that runs the bundled model with ONNX Runtime and, like
Triton, refuses a request of more faces than the config's max_batch_size. The client is real
tritonclient; the tests that talk to a server skip without it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
from paths import FER_MODEL
from processes import run

from edge_fer.cli.main import main
from edge_fer.imageio import imread
from edge_fer.preprocess import PreprocessSpec

MAX_BATCH = 4  # small, so that a few images need several requests

try:
    import tritonclient.http  # noqa: F401

    TRITONCLIENT = None
except ImportError as exc:
    TRITONCLIENT = f"tritonclient[http] is not installed ({exc})"
needs_tritonclient = pytest.mark.skipif(TRITONCLIENT is not None, reason=TRITONCLIENT or "")


@pytest.fixture(scope="module")
def model():
    import onnxruntime as ort

    sess = ort.InferenceSession(str(FER_MODEL), providers=["CPUExecutionProvider"])
    return sess, PreprocessSpec.from_metadata(dict(sess.get_modelmeta().custom_metadata_map))


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    argv = ["deploy", "triton", "--model", str(FER_MODEL), "--out", str(out)]
    assert main([*argv, "--platform", "onnxruntime", "--max-batch", str(MAX_BATCH)]) == 0
    return out / "triton_client.py"


class _Triton(BaseHTTPRequestHandler):
    """POST /v2/models/<name>[/versions/<v>]/infer, answered as Triton answers it."""

    protocol_version = "HTTP/1.1"  # tritonclient keeps its connection open

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, header_len: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if header_len is not None:
            self.send_header("Inference-Header-Content-Length", str(header_len))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, message: str) -> None:
        self._send(400, json.dumps({"error": message}).encode())

    def do_POST(self) -> None:
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        json_len = int(self.headers.get("Inference-Header-Content-Length", len(body)))
        request, blob = json.loads(body[:json_len]), body[json_len:]
        m = re.fullmatch(r"/v2/models/([^/]+)(/versions/[^/]+)?/infer", self.path)
        name = unquote(m.group(1)) if m else self.path
        if name != srv.model_name:
            return self._error(f"Request for unknown model: '{name}' is not found")
        (inp,) = request["inputs"]
        shape = inp["shape"]
        if shape[0] > srv.max_batch:
            return self._error(
                f"inference request batch-size must be <= {srv.max_batch} for '{name}'"
            )
        assert inp["datatype"] == "FP32"
        size = inp["parameters"]["binary_data_size"]
        x = np.frombuffer(blob[:size], np.float32).reshape(shape)
        srv.batches.append(x)
        probs = srv.session.run(None, {inp["name"]: x})[0]
        (out,) = request["outputs"]
        k = out.get("parameters", {}).get("classification", 0)
        if k:  # Triton: "<value>:<index>:<label>" of the k largest, largest first
            top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            labels = srv.labels
            texts = [
                f"{probs[r, i]:f}:{i}:{labels[i]}".encode()
                for r, row in enumerate(top)
                for i in row
            ]
            data = b"".join(struct.pack("<I", len(t)) + t for t in texts)
            dtype, oshape = "BYTES", [len(x), k]
        else:
            data, dtype, oshape = probs.astype(np.float32).tobytes(), "FP32", list(probs.shape)
        header = json.dumps(
            {
                "model_name": name,
                "model_version": "1",
                "outputs": [
                    {
                        "name": out["name"],
                        "datatype": dtype,
                        "shape": oshape,
                        "parameters": {"binary_data_size": len(data)},
                    }
                ],
            }
        ).encode()
        self._send(200, header + data, len(header))


@pytest.fixture
def triton(model):
    sess, spec = model
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Triton)
    srv.daemon_threads = True
    srv.model_name, srv.max_batch, srv.session, srv.labels = (
        "fer_onnx",
        MAX_BATCH,
        sess,
        spec.classes,
    )
    srv.batches = []
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _url(srv) -> str:
    return f"127.0.0.1:{srv.server_address[1]}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(script: Path, *argv):
    return run([sys.executable, script, *argv], timeout=60)


def _one_line(r, status: int) -> str:
    assert r.returncode == status, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


def _exif_rotated_jpeg(img: np.ndarray) -> bytes:
    """A JPEG whose EXIF orientation (6) says: turn it 90 degrees clockwise to show it."""
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    tiff = struct.pack("<2sHIH", b"II", 42, 8, 1) + struct.pack("<HHIHHI", 0x0112, 3, 1, 6, 0, 0)
    app1 = b"Exif\x00\x00" + tiff
    jpeg = buf.tobytes()
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def _images(folder: Path, n: int) -> list[Path]:
    """n images edge-fer reads: gray, BGR, BGRA, 16-bit, an EXIF-rotated JPEG, varied sizes."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        h, w = (30 + 9 * i, 40 + 5 * i)
        kind = i % 5
        p = folder / f"face{i:02d}.{'jpg' if kind == 4 else 'png'}"
        if kind == 0:
            cv2.imwrite(str(p), rng.integers(0, 256, (h, w), np.uint8))
        elif kind == 1:
            cv2.imwrite(str(p), rng.integers(0, 256, (h, w, 3), np.uint8))
        elif kind == 2:
            cv2.imwrite(str(p), rng.integers(0, 256, (h, w, 4), np.uint8))
        elif kind == 3:  # edge-fer (IMREAD_COLOR) scales 16-bit pixels to 8 bits
            cv2.imwrite(str(p), rng.integers(0, 65536, (h, w, 3), np.uint16))
        else:
            p.write_bytes(_exif_rotated_jpeg(rng.integers(0, 256, (h, w, 3), np.uint8)))
        paths.append(p)
    return paths


def _expected(model, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The tensor edge-fer makes of these files and the model's probabilities for it."""
    sess, spec = model
    x = spec.prepare([imread(p) for p in paths])
    return x, sess.run(None, {"input": x})[0]


@needs_tritonclient
def test_sends_at_most_max_batch_faces_per_request(script, triton, model, tmp_path) -> None:
    paths = _images(tmp_path, 2 * MAX_BATCH + 2)
    r = _client(script, "--url", _url(triton), "--raw", *paths)
    assert r.returncode == 0, r.stderr
    assert [len(b) for b in triton.batches] == [MAX_BATCH, MAX_BATCH, 2]
    x, probs = _expected(model, paths)
    np.testing.assert_allclose(np.concatenate(triton.batches), x, atol=1e-5)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in paths]  # in the order given
    _, spec = model
    got = np.array([[row["probs"][c] for c in spec.classes] for row in rows])
    np.testing.assert_allclose(got, probs, atol=1e-4)


@needs_tritonclient
def test_top_classes_of_every_face_in_order(script, triton, model, tmp_path) -> None:
    paths = _images(tmp_path, MAX_BATCH + 1)
    r = _client(script, "--url", _url(triton), "--top", "2", *paths)
    assert r.returncode == 0, r.stderr
    assert [len(b) for b in triton.batches] == [MAX_BATCH, 1]
    _, probs = _expected(model, paths)
    _, spec = model
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in paths]
    for row, p in zip(rows, probs):
        want = np.argsort(-p, kind="stable")[:2]
        assert [t["index"] for t in row["top"]] == list(want)
        assert row["expression"] == spec.classes[want[0]]
        assert [t["label"] for t in row["top"]] == [spec.classes[i] for i in want]
        np.testing.assert_allclose([t["prob"] for t in row["top"]], p[want], atol=1e-4)


@needs_tritonclient
def test_reads_images_as_edge_fer_does(script, triton, model, tmp_path) -> None:
    """A 16-bit PNG is scaled to 8 bits and a phone JPEG turned upright, as edge-fer reads them
    (IMREAD_UNCHANGED sent 16-bit values as if 8-bit, and the JPEG on its side)."""
    paths = [p for p in _images(tmp_path, 5) if p.name.startswith(("face03", "face04"))]
    r = _client(script, "--url", _url(triton), "--raw", *paths)
    assert r.returncode == 0, r.stderr
    x, _ = _expected(model, paths)
    np.testing.assert_allclose(np.concatenate(triton.batches), x, atol=1e-5)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("--box", "10,10,40"), "--box"),
        (("--box", "a,b,c,d"), "--box"),
        (("--box", "10,10,0,40"), "--box"),
        (("--box", "10,10,40,-4"), "--box"),
        (("--box", "nan,10,40,40"), "--box"),
        (("--top", "0"), "--top"),
        (("--top", "8"), "--top"),  # the model has 7 classes
        (("--url", "localhost:port"), "--url"),
    ],
)
def test_usage_mistakes_are_one_line(script, tmp_path, argv, named) -> None:
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((48, 48), 128, np.uint8))
    r = _client(script, "--url", f"127.0.0.1:{_closed_port()}", *argv, img)
    assert named in _one_line(r, 2)


@needs_tritonclient
def test_unreadable_image_is_one_line_naming_it(script, tmp_path) -> None:
    missing = tmp_path / "missing.png"
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    url = f"127.0.0.1:{_closed_port()}"
    for bad in (missing, garbage):
        assert str(bad) in _one_line(_client(script, "--url", url, bad), 2)


@needs_tritonclient
def test_box_outside_the_image_is_one_line(script, tmp_path) -> None:
    img = tmp_path / "frame.png"
    cv2.imwrite(str(img), np.full((60, 80), 128, np.uint8))
    r = _client(script, "--url", f"127.0.0.1:{_closed_port()}", "--box", "100,10,20,20", img)
    assert "--box" in _one_line(r, 2) and str(img) in r.stderr


@needs_tritonclient
def test_server_unreachable_is_one_line(script, tmp_path) -> None:
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((48, 48), 128, np.uint8))
    port = _closed_port()
    err = _one_line(_client(script, "--url", f"127.0.0.1:{port}", img), 1)
    assert f"127.0.0.1:{port}" in err and "refused" in err.lower()


@needs_tritonclient
def test_server_error_is_one_line(script, triton, tmp_path) -> None:
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((48, 48), 128, np.uint8))
    err = _one_line(_client(script, "--url", _url(triton), "--model", "nope", img), 1)
    assert "unknown model" in err and "nope" in err
    assert triton.batches == []


@needs_tritonclient
def test_box_far_larger_than_the_image_is_one_line(script, tmp_path) -> None:
    """A side over 8x the image's larger side (as `edge-fer run` refuses it): its padded crop
    was allocated whole (w=96000: a 13 GB array) before the request."""
    img = tmp_path / "frame.png"
    cv2.imwrite(str(img), np.full((60, 80), 128, np.uint8))
    url = f"127.0.0.1:{_closed_port()}"
    r = _client(script, "--url", url, "--box", "0,0,641,20", img)
    assert "--box" in _one_line(r, 2) and "8x" in r.stderr and str(img) in r.stderr
    # 8x is still a box (a face in the frame's corner may reach far out): on to the server
    assert "refused" in _one_line(_client(script, "--url", url, "--box", "0,0,640,20", img), 1)


@needs_tritonclient
@pytest.mark.parametrize("unbuffered", [False, True])
def test_closed_pipe_ends_quietly(script, triton, tmp_path, unbuffered) -> None:
    """`triton_client.py ... | head -1`: the reader gone, it was a BrokenPipeError traceback
    (from print, or from the flush at exit: "Exception ignored ..." and status 120)."""
    paths = _images(tmp_path, MAX_BATCH + 1)
    env = dict(os.environ, PYTHONUNBUFFERED="1") if unbuffered else None
    proc = subprocess.Popen(
        [sys.executable, str(script), "--url", _url(triton), "--raw", *map(str, paths)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.stdout.close()  # the reader leaves before the first line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err == "", (proc.returncode, err)


@needs_tritonclient
def test_ctrl_c_while_waiting_for_triton_is_one_line(script, tmp_path) -> None:
    """Ctrl-C while the server thinks was a KeyboardInterrupt traceback (after gevent's own
    "KeyboardInterrupt" line); now one line and 130, as a shell reports Ctrl-C."""
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((48, 48), 128, np.uint8))
    # Ctrl-C as a terminal delivers it (a background job starts with SIGINT ignored)
    boot = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    with socket.socket() as silent:  # takes the request and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        silent.settimeout(60)
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        proc = subprocess.Popen(
            [sys.executable, "-c", boot, str(script), "--url", url, str(img)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            conn, _ = silent.accept()
            with conn:
                conn.settimeout(60)
                assert conn.recv(65536)  # the request came: the client waits for the answer
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130 and out == "", (proc.returncode, err)
    assert err == "triton_client: interrupted (Ctrl-C)\n", err
