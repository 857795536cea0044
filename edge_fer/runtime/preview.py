"""The MJPEG preview: a small HTTP server in a thread that shows the annotated frames.

It has no authentication, so it defends itself in three ways:
  * the Host header must name this server: loopback names (localhost, 127.0.0.1, [::1]) and the
    host it was told to bind to. A DNS-rebinding page (evil.example resolving to 127.0.0.1) sends
    its own name and gets 421, so it cannot read frames from a browser on this machine.
  * a request line and headers must arrive within `request_timeout` seconds (in total, so a
    client trickling a byte at a time is dropped too); a stream client that stops reading for
    that long is dropped. Watching clients stay as long as they read.
  * at most `max_clients` connections at once; the next gets 503 at once, with no thread and
    without holding up the accepting thread (see `_Refusals`), so a storm of idle
    connections cannot keep a new viewer waiting.
"""

from __future__ import annotations

import ipaddress
import re
import selectors
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from edge_fer.errors import UserError

_PAGE = b"""<!doctype html><html><head><title>edge-fer</title>
<style>body{margin:0;background:#111;color:#ccc;font:14px sans-serif}img{max-width:100%}</style>
</head><body><img src="/stream" alt="edge-fer live preview"></body></html>"""

WILDCARD_HOSTS = ("0.0.0.0", "::")


def host_of(header: str) -> str | None:
    """The host name of a Host header, lower-case, without port or brackets: 'LocalHost:8090'
    -> 'localhost', '[::1]:80' -> '::1'. None when it is not a well-formed Host value."""
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        if end < 0 or not re.fullmatch(r"(:\d*)?", h[end + 1 :]):
            return None
        return h[1:end]
    host, _, port = h.partition(":")
    if not host or not re.fullmatch(r"\d*", port):
        return None
    return host.rstrip(".")  # the absolute form "localhost." is the same name


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def allowed_hosts(bound: str) -> tuple[set[str], bool]:
    """The Host names a server bound to `bound` answers, and whether any IP literal is fine.

    Loopback names always. A server bound to a name or address also answers to that; one bound
    to every interface (0.0.0.0, ::) answers to this machine's names and to any IP address:
    DNS rebinding needs a name under the attacker's control, never an address.
    """
    names = {"localhost", "127.0.0.1", "::1"}
    b = bound.strip().lower().strip("[]")
    any_ip = b in WILDCARD_HOSTS
    if any_ip:
        for n in (socket.gethostname(), socket.getfqdn()):
            if n:
                n = n.lower()
                names.update({n, n.split(".")[0], n.split(".")[0] + ".local"})
    else:
        names.add(b.rstrip("."))
    return names, any_ip


def host_allowed(header: str | None, names: set[str], any_ip: bool) -> bool:
    if header is None:  # HTTP/1.0 tools may omit it; every browser sends one
        return True
    host = host_of(header)
    if host is None:
        return False
    if host in names:
        return True
    ip = _ip(host)
    return ip is not None and (ip.is_loopback or any_ip)


class _DeadlineReader:
    """The request's input stream, giving up `timeout` seconds after the connection opened.

    It reads the socket itself, each recv given only the time left: behind a buffered
    readline, each recv had the whole time again, so a byte every few seconds within one
    line (a slowloris client) held a connection for ever, and 8 of them every slot."""

    def __init__(self, raw, sock: socket.socket, timeout: float) -> None:
        self._raw, self._sock = raw, sock
        self._deadline = time.monotonic() + timeout
        self._buf = b""

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        while True:
            end = self._buf.find(b"\n")
            cut = end + 1 if end >= 0 else None
            if limit is not None and (cut is None or cut > limit) and len(self._buf) >= limit:
                cut = limit  # as readline(size): at most size bytes (http.server then says 414)
            if cut is not None:
                line, self._buf = self._buf[:cut], self._buf[cut:]
                return line
            left = self._deadline - time.monotonic()
            if left <= 0:
                # socket.timeout, not TimeoutError: only the former is what 3.8's http.server
                # catches
                raise socket.timeout("request line and headers took too long")  # noqa: UP041
            self._sock.settimeout(left)
            chunk = self._sock.recv(4096)
            if not chunk:  # the client closed: what came is the last line
                line, self._buf = self._buf, b""
                return line
            self._buf += chunk

    def __getattr__(self, name):
        return getattr(self._raw, name)


class MJPEGPreview:
    """An HTTP server in a thread: / (a page), /stream (multipart MJPEG), /frame.jpg (latest).

    Binds to 127.0.0.1 unless told otherwise; port 0 picks a free port (see `.port`). Frames are
    JPEG-encoded only while someone is watching, at most `max_fps` a second.
    """

    BOUNDARY = "edgeferframe"

    def __init__(
        self,
        port: int = 8090,
        host: str | None = "127.0.0.1",
        quality: int = 80,
        max_fps: float = 30.0,
        *,
        max_clients: int = 8,
        request_timeout: float = 10.0,
    ) -> None:
        if host is None:
            host = "127.0.0.1"
        if not str(host).strip():
            raise UserError(
                "is empty: give the address to listen on (127.0.0.1, the default, for this "
                "machine only; 0.0.0.0 for every interface)",
                param="host",
            )
        host = str(host).strip()
        if not 0 <= int(port) <= 65535:
            raise UserError(f"must be in 0..65535, got {port}", param="port")
        if max_clients < 1:
            raise UserError(f"must be >= 1, got {max_clients}", param="max_clients")
        if not request_timeout > 0:  # NaN too
            raise UserError(f"must be > 0 seconds, got {request_timeout}", param="request_timeout")
        self.quality = int(quality)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.max_clients = int(max_clients)
        self.request_timeout = float(request_timeout)
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._jpeg_time = 0.0  # when _jpeg was encoded
        self._seq = 0
        self._socks: set[socket.socket] = set()  # the open connections, closed by close()
        self._last_encode = 0.0
        self._closed = False
        self.clients = 0  # stream clients now (frames are encoded only for someone)
        self.connections = 0  # open connections, all kinds (at most max_clients)
        self.refused = 0  # connections turned away with 503
        self.wants_frame = threading.Event()  # a client asked for a snapshot
        self._names, self._any_ip = allowed_hosts(host)
        preview = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            timeout = self.request_timeout  # socket timeout: every read and write

            def setup(self):
                super().setup()
                self.rfile = _DeadlineReader(  # type: ignore[assignment]
                    self.rfile, self.connection, preview.request_timeout
                )

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                self.connection.settimeout(preview.request_timeout)  # for the writes now
                if not host_allowed(self.headers.get("Host"), preview._names, preview._any_ip):
                    self._send(
                        421,
                        "text/plain",
                        b"this server does not answer to that host "
                        b"name; use the address edge-fer printed\n",
                    )
                    return
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
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the viewer went away (a closed tab): nothing to tell anyone
                    self.close_connection = True

            def _stream(self):
                try:
                    self.send_response(200)
                    self.send_header(
                        "Content-Type", f"multipart/x-mixed-replace; boundary={preview.BOUNDARY}"
                    )
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                except OSError:  # gone before the first frame
                    self.close_connection = True
                    return
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
                except OSError:  # the client went away, or stopped reading (socket timeout)
                    pass
                finally:
                    with preview._cond:
                        preview.clients -= 1

        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = family
            request_queue_size = 128  # socketserver's 5 drops SYNs in a burst: 1 s+ retries

            def __init__(self, *a, **kw):
                self.refusals = _Refusals()  # before bind: a failed one calls server_close
                super().__init__(*a, **kw)

            def process_request(self, request, client_address):
                with preview._cond:
                    full = preview.connections >= preview.max_clients
                    if not full:
                        preview.connections += 1
                        preview._socks.add(request)
                if full:  # answered here, in the accepting thread: no thread per extra client
                    preview.refused += 1
                    self.refusals.add(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    self._release(request)
                    raise

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    self._release(request)

            def service_actions(self):  # each turn of serve_forever: at least every 0.2 s
                self.refusals.sweep()

            def server_close(self):
                super().server_close()
                self.refusals.close_all()

            def _release(self, request):
                with preview._cond:
                    preview.connections -= 1
                    preview._socks.discard(request)
                    preview._cond.notify_all()

            def handle_error(self, request, client_address):
                # a viewer that dropped the connection (reset, closed while its request was
                # read) is normal: socketserver would print a traceback for it on stderr
                if isinstance(sys.exc_info()[1], OSError):
                    return
                super().handle_error(request, client_address)

        bare = host.strip("[]")
        if ":" in bare:  # an IPv6 address, or a host with a port ("127.0.0.1:8080")
            try:
                ipaddress.IPv6Address(bare.split("%")[0])
            except ValueError:
                raise UserError(
                    f"--preview-host {host}: not a host name or address (give the port "
                    "with --preview-port)"
                ) from None
        try:
            self.server = Server((bare, int(port)), Handler)
        except socket.gaierror as exc:  # a name that does not resolve: the host's fault
            raise UserError(
                f"--preview-host {host}: cannot resolve it ({exc.strerror or exc})"
            ) from None
        except OSError as exc:
            where = f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"
            raise UserError(
                f"--preview-port: cannot listen on {where} ({exc.strerror or exc})"
            ) from None
        except (TypeError, ValueError):  # bind's "encoding of hostname failed" (a bad IDN label)
            raise UserError(f"--preview-host {host}: not a valid host name or address") from None
        bound = self.server.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="edge-fer-preview",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = self.host if self.host not in WILDCARD_HOSTS else socket.gethostname()
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def wait_frame(self, after_seq: int, timeout: float, snapshot: bool = False):
        with self._cond:
            if snapshot:
                self.wants_frame.set()
                if self._jpeg is not None:
                    # with no stream client frames are not encoded: the one kept may be hours
                    # old (the run's first). Wait a little for the one just asked for
                    if time.monotonic() - self._jpeg_time <= max(2 * self.min_interval, 0.2):
                        return self._jpeg, self._seq
                    after_seq, timeout = self._seq, min(timeout, 1.0)
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
            self._jpeg, self._jpeg_time = buf.tobytes(), now
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
        # open connections too: else a viewer that stopped reading, or an idle one, keeps its
        # thread and socket for up to request_timeout after the run
        with self._cond:
            for sock in list(self._socks):
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked on it
                except OSError:
                    pass
            end = time.monotonic() + 2.0
            while self.connections > 0:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)


_BUSY = b"too many preview clients; try again later\n"
_BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Retry-After: 5\r\nConnection: close\r\n"
    + f"Content-Length: {len(_BUSY)}\r\n\r\n".encode()
    + _BUSY
)


class _Refusals:
    """Connections over the cap: each gets its 503 at once (non-blocking), then stays open until
    its request arrives (read and dropped) or `linger` seconds pass. Closing a socket with unread
    data resets it, and the client would see a reset instead of the answer; waiting for that
    data in the accepting thread (0.2 s each) let a storm of idle connections hold up every new
    viewer for storm x 0.2 s. At most `limit` wait at once (file descriptors); beyond that the
    oldest, answered long ago, is closed early. Used by the serving thread only: no lock."""

    def __init__(self, linger: float = 0.2, limit: int = 256) -> None:
        self.linger, self.limit = linger, limit
        self._sel = selectors.DefaultSelector()
        self._deadline: dict[socket.socket, float] = {}  # in arrival order: oldest first

    def __len__(self) -> int:
        return len(self._deadline)

    def add(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            sock.send(_BUSY_RESPONSE)  # fits a fresh socket's send buffer: never blocks
            sock.shutdown(socket.SHUT_WR)  # the FIN follows the answer: the client reads to EOF
            self._sel.register(sock, selectors.EVENT_READ)
        except (OSError, ValueError):  # gone already
            _close(sock)
            return
        self._deadline[sock] = time.monotonic() + self.linger
        if len(self._deadline) > self.limit:
            self._drop(next(iter(self._deadline)))
        self.sweep()

    def sweep(self) -> None:
        """Close those whose request arrived (read first) and those past their time."""
        if not self._deadline:
            return
        for key, _ in self._sel.select(0):
            sock = key.fileobj
            try:
                while sock.recv(65536):  # type: ignore[union-attr]
                    pass
            except OSError:  # BlockingIOError: all there was is read; or a reset
                pass
            self._drop(sock)  # type: ignore[arg-type]
        now = time.monotonic()
        for sock, deadline in list(self._deadline.items()):
            if deadline > now:
                break
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        self._deadline.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        _close(sock)

    def close_all(self) -> None:
        for sock in list(self._deadline):
            self._drop(sock)
        self._sel.close()


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
