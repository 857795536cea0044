"""The MJPEG preview server, over real HTTP connections: Host header check, idle timeouts, the
client cap, and the bind address."""

from __future__ import annotations

import http.client
import socket
import struct
import time

import numpy as np
import pytest
from runtime_helpers import feed_frames

from edge_fer.errors import UserError
from edge_fer.runtime.preview import MJPEGPreview, allowed_hosts, host_allowed, host_of


def _get(port: int, path: str = "/", host: str | None = None, addr: str = "127.0.0.1"):
    """(status, body) of one GET with the given Host header (None: none at all)."""
    with socket.create_connection((addr, port), timeout=5) as s:
        req = f"GET {path} HTTP/1.0\r\n" + (f"Host: {host}\r\n" if host is not None else "")
        s.sendall((req + "\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _wait(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.fixture
def preview():
    made = []

    def make(*a, **kw):
        p = MJPEGPreview(*a, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


# ---- Host header --------------------------------------------------------------------------------


def test_host_parsing():
    assert host_of("LocalHost:8090") == "localhost"
    assert host_of("[::1]:80") == "::1" and host_of("[::1]") == "::1"
    assert host_of("localhost.") == "localhost"
    for bad in ("", ":80", "a:b:c", "[::1", "[::1]x", "host:port"):
        assert host_of(bad) is None, bad


def test_allowed_hosts_for_bind_addresses():
    names, any_ip = allowed_hosts("127.0.0.1")
    assert names == {"localhost", "127.0.0.1", "::1"} and not any_ip
    names, any_ip = allowed_hosts("192.168.1.5")
    assert "192.168.1.5" in names and not any_ip
    assert host_allowed("192.168.1.5:8090", names, any_ip)
    assert not host_allowed("192.168.1.6:8090", names, any_ip)
    names, any_ip = allowed_hosts("Jetson.Local")
    assert host_allowed("jetson.local:8090", names, any_ip)
    names, any_ip = allowed_hosts("0.0.0.0")
    assert any_ip and socket.gethostname().lower() in names
    assert host_allowed("10.1.2.3:8090", names, any_ip) and host_allowed("[fe80::1]", names, any_ip)
    assert not host_allowed("evil.example", names, any_ip)


def test_loopback_server_answers_loopback_names_only(preview):
    p = preview(0)
    port = p.port
    p.write(np.full((40, 60, 3), 128, np.uint8))
    for host in (
        f"localhost:{port}",
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        "localhost",
        f"LOCALHOST:{port}",
        f"127.0.0.2:{port}",
        None,
    ):
        assert _get(port, "/", host)[0] == 200, host
    assert _get(port, "/frame.jpg", f"localhost:{port}")[0] == 200
    # a DNS-rebinding page sends its own name; malformed values are refused as well
    for host in (
        f"evil.example:{port}",
        "evil.example",
        f"127.0.0.1.evil.example:{port}",
        f"localhost:{port}:1",
        "",
        f"192.168.1.5:{port}",
    ):
        for path in ("/", "/frame.jpg", "/stream"):
            status, body = _get(port, path, host)
            assert status == 421 and b"jpeg" not in body.lower(), (host, path)


def test_http_client_sees_421_for_a_foreign_host(preview):
    p = preview(0)
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
    conn.request("GET", "/frame.jpg", headers={"Host": "attacker.example"})
    assert conn.getresponse().status == 421
    conn.close()


def test_server_bound_to_a_name_answers_to_it(preview):
    name = socket.gethostname()
    try:
        addr = socket.gethostbyname(name)
        p = preview(0, name)
    except (OSError, UserError):
        pytest.skip(f"this machine's name {name!r} does not resolve to an address to bind")
    assert _get(p.port, "/", f"{name}:{p.port}", addr=addr)[0] == 200
    assert _get(p.port, "/", f"evil.example:{p.port}", addr=addr)[0] == 421


def test_wildcard_bind_answers_ip_addresses_and_this_machines_name(preview):
    p = preview(0, "0.0.0.0")
    assert _get(p.port, "/", f"10.20.30.40:{p.port}")[0] == 200
    assert _get(p.port, "/", f"{socket.gethostname()}:{p.port}")[0] == 200
    assert _get(p.port, "/", f"evil.example:{p.port}")[0] == 421


@pytest.mark.parametrize("host", ["", "   "])
def test_empty_host_is_refused(host):
    with pytest.raises(UserError, match="^host is empty") as exc:
        MJPEGPreview(0, host)
    assert exc.value.param == "host"  # the CLI's --preview-host is checked before (runner)
    assert len(str(exc.value).splitlines()) == 1


# ---- timeouts and the client cap ----------------------------------------------------------------


def test_idle_connection_is_dropped(preview):
    p = preview(0, request_timeout=0.5)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        assert _wait(lambda: p.connections == 1)
        t0 = time.monotonic()
        assert s.recv(100) == b""  # the server closed it: no request line in time
        assert 0.3 < time.monotonic() - t0 < 3.0
    assert _wait(lambda: p.connections == 0)


def test_trickled_headers_are_dropped_at_the_deadline(preview):
    """A byte every 0.1 s never trips a per-read timeout; the total deadline still applies."""
    p = preview(0, request_timeout=0.6)
    assert _trickle_closed(p, [b"GET / HTTP/1.0\r\n"] + [b"X-A: b\r\n"] * 50, pause=0.1) < 2.5
    assert _wait(lambda: p.connections == 0)


def _trickle_closed(p, pieces: list[bytes], pause: float) -> float:
    """Send `pieces` to the preview one by one, `pause` s apart; the seconds until the server
    closed the connection (the test fails if it never does)."""
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        t0 = time.monotonic()
        for piece in pieces:
            try:
                s.sendall(piece)
            except OSError:
                return time.monotonic() - t0
            s.settimeout(pause)
            try:
                if s.recv(100) == b"":
                    return time.monotonic() - t0
            except TimeoutError:
                pass
    raise AssertionError("the server kept the connection open")


def test_stream_client_stays_while_it_reads(preview):
    p = preview(0, request_timeout=0.5, max_fps=100)
    stop, t = feed_frames(p.write, (24, 32, 3))
    try:
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(f"GET /stream HTTP/1.0\r\nHost: 127.0.0.1:{p.port}\r\n\r\n".encode())
            t0 = time.monotonic()
            got = b""
            while time.monotonic() - t0 < 2.0:  # four times the timeout
                chunk = s.recv(65536)
                assert chunk, "the server dropped a client that was reading"
                got += chunk
            assert got.count(b"Content-Type: image/jpeg") > 20
    finally:
        stop.set()
        t.join()


def test_client_cap_answers_503_beyond_it(preview):
    p = preview(0, max_clients=2, request_timeout=5)
    idle = [socket.create_connection(("127.0.0.1", p.port), timeout=5) for _ in range(2)]
    try:
        assert _wait(lambda: p.connections == 2)
        status, body = _get(p.port, "/", f"127.0.0.1:{p.port}")
        assert status == 503 and b"too many" in body and p.refused == 1
        assert p.connections == 2  # no thread was started for it
    finally:
        for s in idle:
            s.close()
    assert _wait(lambda: p.connections == 0)
    assert _get(p.port, "/", f"127.0.0.1:{p.port}")[0] == 200


def test_a_storm_of_idle_connections_does_not_hold_up_a_new_viewer(preview):
    """Each connection over the cap was held 0.2 s by the accepting thread before its 503: 200
    idle ones kept a new viewer waiting 40 s for its 503, and for its page once a slot was free.
    The bounds below are a fraction of that, generous for a loaded machine."""
    storm_size = 200
    p = preview(0, max_clients=2, request_timeout=30)
    held = [socket.create_connection(("127.0.0.1", p.port), timeout=5) for _ in range(2)]
    storm = []
    try:
        assert _wait(lambda: p.connections == 2)
        for _ in range(storm_size):  # connect and send nothing; no waiting for the handshakes
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", p.port))
            storm.append(s)
        t0 = time.monotonic()
        status, body = _get(p.port, "/", f"127.0.0.1:{p.port}")
        assert status == 503 and b"too many" in body
        assert time.monotonic() - t0 < storm_size * 0.2 / 8  # 5 s
        # every storm connection answered (else one still queued would take the freed slot)
        assert _wait(lambda: p.refused >= storm_size + 1, timeout=storm_size * 0.2 / 4)
        held.pop().close()  # a slot frees: the next viewer gets the page while the storm lasts
        assert _wait(lambda: p.connections == 1)
        t0 = time.monotonic()
        assert _get(p.port, "/", f"127.0.0.1:{p.port}")[0] == 200
        assert time.monotonic() - t0 < storm_size * 0.2 / 8
    finally:
        for s in storm + held:
            s.close()
    assert _wait(lambda: p.connections == 0)


def test_run_with_an_empty_preview_host_is_one_line_exit_2(tmp_path, capsys):
    import cv2

    from edge_fer.cli.main import main

    cv2.imwrite(str(tmp_path / "a.png"), np.full((48, 64, 3), 100, np.uint8))
    rc = main(["run", str(tmp_path / "a.png"), "--preview-port", "0", "--preview-host", ""])
    err = capsys.readouterr().err
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("edge-fer run: error: --preview-host is empty")
    # a host without the port it is for: no preview would be served (before: ignored, exit 0)
    for host in ("", "0.0.0.0"):
        rc = main(["run", str(tmp_path / "a.png"), "--preview-host", host])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and line.endswith("--preview-host needs --preview-port: without it no "
                                         "preview is served"), line  # fmt: skip


def test_a_viewer_that_drops_its_connection_prints_nothing(preview, capfd):
    """A browser tab closed while its request was on the way resets the connection:
    socketserver printed a ConnectionResetError traceback on stderr, in the middle of a run."""
    p = preview(0)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    # the request line and part of the headers: the server waits for the rest
    s.sendall(f"GET /frame.jpg HTTP/1.1\r\nHost: 127.0.0.1:{p.port}".encode())
    assert _wait(lambda: p.connections == 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # with SO_LINGER 0: a reset, not a clean close
    assert _wait(lambda: p.connections == 0)
    assert _get(p.port, "/", f"127.0.0.1:{p.port}")[0] == 200  # still serving
    assert capfd.readouterr().err == ""


# ---- snapshots, close, bad host names -----------------------------------------------------------


def _frame_jpg(port: int) -> np.ndarray:
    import cv2

    status, body = _get(port, "/frame.jpg", f"127.0.0.1:{port}")
    assert status == 200
    return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)


def test_snapshot_is_the_current_frame_not_an_old_one(preview):
    """With no stream client frames are not encoded: /frame.jpg served the frame kept from long
    ago (the run's first, then the one after the previous request), never the current one."""
    p = preview(0, max_fps=100)
    level = [20]
    stop, t = feed_frames(lambda f: p.write(np.full_like(f, level[0])), (24, 32, 3))
    try:
        assert _wait(lambda: p._jpeg is not None)
        time.sleep(0.5)
        level[0] = 220  # the scene changes; nobody watches
        time.sleep(0.5)
        assert abs(float(_frame_jpg(p.port).mean()) - 220) < 10
        level[0] = 90
        time.sleep(0.5)
        assert abs(float(_frame_jpg(p.port).mean()) - 90) < 10
    finally:
        stop.set()
        t.join()


def test_close_drops_open_connections(preview):
    """close() stopped accepting but left open connections: an idle one, or a viewer that
    stopped reading, kept its thread and socket for up to request_timeout after the run."""
    p = preview(0, request_timeout=60, max_fps=100)
    stop, t = feed_frames(p.write, (120, 160, 3), interval=0.005)
    idle = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(10)
    stalled.connect(("127.0.0.1", p.port))
    try:
        stalled.sendall(f"GET /stream HTTP/1.0\r\nHost: 127.0.0.1:{p.port}\r\n\r\n".encode())
        assert _wait(lambda: p.connections == 2 and p.clients == 1)
        time.sleep(0.5)  # its buffers fill: the server's thread blocks in a write
        stop.set()
        t.join()
        p.close()
        assert p.connections == 0
        idle.settimeout(5)
        assert idle.recv(100) == b""  # closed now, not in 60 s
    finally:
        stop.set()
        idle.close()
        stalled.close()


def test_a_host_name_that_cannot_be_encoded_is_a_user_error():
    """A non-ASCII label of over 63 characters: bind raised TypeError (a traceback, exit 1)."""
    with pytest.raises(UserError, match="not a valid host name") as exc:
        MJPEGPreview(0, "ö" * 70 + ".example")
    assert len(str(exc.value).splitlines()) == 1


def test_bytes_trickled_within_one_line_are_dropped_at_the_deadline(preview):
    """Within one line, each recv had the whole timeout again: a byte every 0.3 s (a slowloris
    client) held the connection past any deadline, and 8 such clients every slot (503)."""
    p = preview(0, request_timeout=0.8, max_clients=1)
    request = b"GET /frame.jpg HTTP/1.0"
    assert _trickle_closed(p, [request[i : i + 1] for i in range(len(request))], pause=0.3) < 2.5
    assert _wait(lambda: p.connections == 0)


def test_an_ipv6_address_it_cannot_listen_on_is_written_with_brackets():
    """`cannot listen on fe80::1:18093`: the port ran into the address."""
    with pytest.raises(UserError, match=r"cannot listen on \[fe80::1\]:\d+ \(") as exc:
        MJPEGPreview(0, "fe80::1")  # link-local without a scope: no machine binds it
    assert len(str(exc.value).splitlines()) == 1


@pytest.mark.parametrize(
    "host, said",
    [
        ("127.0.0.1:8080", "--preview-host 127.0.0.1:8080: not a host name or address (give the"),
        ("[::1]:8080", "--preview-host [::1]:8080: not a host name or address"),
        ("nosuchhost.invalid", "--preview-host nosuchhost.invalid: cannot resolve it"),
    ],
)
def test_a_host_with_a_port_or_that_does_not_resolve_is_the_hosts_fault(host, said):
    """`--preview-host 127.0.0.1:8080` was `--preview-port: cannot listen on
    [127.0.0.1:8080]:8090 (Name or service not known)`: brackets round a host:port, and the
    blame on the port."""
    with pytest.raises(UserError) as exc:
        MJPEGPreview(0, host)
    assert str(exc.value).startswith(said) and len(str(exc.value).splitlines()) == 1, exc.value
