"""The MJPEG preview: a small HTTP server in a thread that shows the annotated frames."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from edge_fer.errors import UserError

# ---- MJPEG preview over HTTP -----------------------------------------------------------------

_PAGE = b"""<!doctype html><html><head><title>edge-fer</title>
<style>body{margin:0;background:#111;color:#ccc;font:14px sans-serif}img{max-width:100%}</style>
</head><body><img src="/stream" alt="edge-fer live preview"></body></html>"""


class MJPEGPreview:
    """An HTTP server in a thread: / (a page), /stream (multipart MJPEG), /frame.jpg (latest).

    Binds to 127.0.0.1 unless told otherwise; port 0 picks a free port (see `.port`). Frames are
    JPEG-encoded only while someone is watching, at most `max_fps` a second.
    """

    BOUNDARY = "edgeferframe"

    def __init__(self, port: int = 8090, host: str = "127.0.0.1", quality: int = 80,
                 max_fps: float = 30.0) -> None:  # fmt: skip
        if not 0 <= int(port) <= 65535:
            raise UserError(f"--preview-port must be in 0..65535, got {port}")
        self.quality = int(quality)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._last_encode = 0.0
        self._closed = False
        self.clients = 0
        self.wants_frame = threading.Event()  # a client asked for a snapshot
        preview = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", _PAGE)
                elif path == "/frame.jpg":
                    jpeg = preview.wait_frame(-1, timeout=5.0, snapshot=True)[0]
                    if jpeg is None:
                        self._send(503, "text/plain", b"no frame yet\n")
                    else:
                        self._send(200, "image/jpeg", jpeg)
                elif path == "/stream":
                    self._stream()
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self):
                self.send_response(200)
                self.send_header(
                    "Content-Type", f"multipart/x-mixed-replace; boundary={preview.BOUNDARY}"
                )
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                with preview._cond:
                    preview.clients += 1
                seq = -1
                try:
                    while True:
                        jpeg, seq = preview.wait_frame(seq, timeout=1.0)
                        if preview._closed:
                            break
                        if jpeg is None:
                            continue
                        self.wfile.write(
                            f"--{preview.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg
                            + b"\r\n"
                        )
                        self.wfile.flush()
                except (TimeoutError, BrokenPipeError, ConnectionResetError, OSError):
                    pass
                finally:
                    with preview._cond:
                        preview.clients -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self.server = Server((host, int(port)), Handler)
        except OSError as exc:
            raise UserError(
                f"--preview-port: cannot listen on {host}:{port} ({exc.strerror})"
            ) from None
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
            name="edge-fer-preview", daemon=True,
        )  # fmt: skip
        self._thread.start()

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::") else socket.gethostname()
        return f"http://{host}:{self.port}/"

    def wait_frame(self, after_seq: int, timeout: float, snapshot: bool = False):
        with self._cond:
            if snapshot:
                self.wants_frame.set()
                if self._jpeg is not None:
                    return self._jpeg, self._seq
            end = time.monotonic() + timeout
            while self._seq <= after_seq and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._jpeg, self._seq

    def write(self, image: np.ndarray) -> None:
        now = time.monotonic()
        if self.clients <= 0 and not self.wants_frame.is_set() and self._jpeg is not None:
            return  # nobody watching: don't spend CPU on JPEG
        if now - self._last_encode < self.min_interval:
            return
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        self._last_encode = now
        with self._cond:
            self._jpeg = buf.tobytes()
            self._seq += 1
            self.wants_frame.clear()
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=2.0)
