"""Issue 15: record a real upstream through a session's port, then play it without it.

The upstream is a second ``simulacra serve``: its cloud mocks for python-novaclient, and a
scenario of its own for cookies, binary bodies, absolute links and a poll. Each test
records through the session's port (or the /virtual/ prefix, or as an HTTP proxy), stops
the upstream, begins playback on the same port and checks the same calls get the same
answers, with nothing but Simulacra answering.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import ssl
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v2
from novaclient import client as nova_client

from tests.mirage_helpers import assert_data, assert_error, create_scenario, list_stubs
from tests.server import RunningServer, free_port, refused_serve
from tests.test_cloud_compute import novaclient_for

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def upstream() -> Iterator[RunningServer]:
    server = RunningServer(store="memory://").start()
    try:
        yield server
    finally:
        server.stop()


def begin(http: requests.Session, base_url: str, scenario: str, **action: Any) -> dict:
    document = {"begin": None, **action}
    reply = http.post(f"{base_url}/api/v2/scenarios/objects/{scenario}/action", json=document)
    return assert_data(reply)


def recording_port(http: requests.Session, base_url: str, name: str, upstream: str) -> int:
    """Begin ``{name}-rec`` recording ``upstream`` on a port of its own; the port."""
    begun = begin(
        http, base_url, name, session=name + "-rec", mode="record", port=0, upstream=upstream
    )
    return begun["port"]


def end(http: requests.Session, base_url: str, scenario: str, session: str) -> None:
    reply = http.post(
        f"{base_url}/api/v2/scenarios/objects/{scenario}/action",
        json={"end": None, "session": session},
    )
    assert_data(reply)


def upstream_service(http: requests.Session, upstream: RunningServer, name: str) -> str:
    """A service on the upstream at ``/virtual/{name}/live``: cookies, a PNG, JSON with
    absolute links to itself, a poll that answers pending twice then done."""
    base = f"{upstream.url}/virtual/{name}/live"
    stubs = [
        {
            "request": {"method": "POST", "urlPath": "/login"},
            "response": {
                "status": 200,
                "headers": {"Set-Cookie": ["sid=abc; Path=/", "theme=dark; Path=/prefs"]},
                "body": "welcome",
            },
        },
        {
            "request": {"method": "GET", "urlPath": "/me", "headers": {"Cookie": "sid=abc"}},
            "response": {"status": 200, "body": '{"user": "ann"}'},
        },
        {
            "request": {"method": "GET", "urlPath": "/logo.png"},
            "response": {
                "status": 200,
                "headers": {"Content-Type": "image/png"},
                "base64Body": base64.b64encode(PNG).decode(),
            },
        },
        {
            "request": {"method": "GET", "urlPath": "/links"},
            "response": {
                "status": 200,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"next": f"{base}/me", "self": f"{base}/links"}),
            },
        },
        {
            "request": {"method": "POST", "urlPath": "/jobs"},
            "response": {
                "status": 303,
                "headers": {"Location": f"{base}/jobs/7"},
                "body": "",
            },
        },
        {
            "request": {"method": "GET", "urlPath": "/jobs/7"},
            "response": {"status": 200, "body": ["pending", "pending", "done"]},
        },
    ]
    create_scenario(http, upstream.url, name)
    begin(http, upstream.url, name, session=name + "-r", mode="record")
    for stub in stubs:
        reply = http.put(
            f"{upstream.url}/api/v2/scenarios/objects/{name}/stubs",
            json=stub,
            headers={"session": name + "-r"},
        )
        assert reply.status_code in (200, 201), reply.text
    end(http, upstream.url, name, name + "-r")
    begin(http, upstream.url, name, session="live", mode="playback")
    return base


def client_calls(url: str) -> list[tuple[int, dict[str, str], bytes]]:
    """What a client does against the service at ``url``: the answers it got."""
    seen = []
    with requests.Session() as client:
        for method, path in [
            ("POST", "/login"),
            ("GET", "/me"),  # with the cookie the login set
            ("GET", "/logo.png"),
            ("GET", "/links"),
            ("POST", "/jobs"),
            ("GET", "/jobs/7"),
            ("GET", "/jobs/7"),
            ("GET", "/jobs/7"),
        ]:
            reply = client.request(
                method,
                url + path,
                headers={"Authorization": "Bearer s3cret", "X-Api-Key": "k3y"},
                allow_redirects=False,
                timeout=10,
            )
            kept = {k: v for k, v in reply.headers.items() if k.lower() in ("content-type",)}
            if "location" in reply.headers:
                kept["location"] = reply.headers["location"]
            seen.append((reply.status_code, kept, reply.content))
        assert client.cookies.get("sid") == "abc"
    return seen


def test_record_a_service_then_play_it_without_the_upstream(
    http: requests.Session, base_url: str, name: str, upstream: RunningServer
) -> None:
    live = upstream_service(http, upstream, name)
    create_scenario(http, base_url, name)
    begun = begin(http, base_url, name, session=name + "-rec", mode="record", port=0, upstream=live)
    port = begun["port"]
    assert begun["upstream"] == live
    here = f"http://127.0.0.1:{port}"
    recorded = client_calls(here)
    statuses = [status for status, _, _ in recorded]
    assert statuses == [200, 200, 200, 200, 303, 200, 200, 200]
    assert recorded[2][2] == PNG  # bytes, byte for byte
    links = json.loads(recorded[3][2])  # the upstream's absolute URLs point here now
    assert links == {"next": f"{here}/me", "self": f"{here}/links"}
    assert recorded[4][1]["location"] == f"{here}/jobs/7"
    assert [body for _, _, body in recorded[5:]] == [b"pending", b"pending", b"done"]
    end(http, base_url, name, name + "-rec")

    # Nothing holds a credential: the stored stubs and the export.
    stubs = [item["stub"] for item in list_stubs(http, base_url, name)]
    exported = http.get(f"{base_url}/api/v2/scenarios/objects/{name}/export")
    assert exported.status_code == 200
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        files = b"".join(archive.read(n) for n in archive.namelist())
    for secret in ("s3cret", "k3y", "authorization", "x-api-key"):
        assert secret not in json.dumps(stubs).lower()
        assert secret.encode() not in files.lower()
    assert not any("cookie" in k.lower() for s in stubs for k in s["request"].get("headers", {}))
    poll = next(s for s in stubs if s["request"]["urlPath"] == "/jobs/7")
    assert poll["response"]["body"] == ["pending", "pending", "done"]

    upstream.stop()
    played = begin(http, base_url, name, session=name + "-play", mode="playback", port=port)
    assert played["port"] == port
    assert client_calls(here) == recorded

    # The tracker tells what was forwarded upstream (with its status) from what was played.
    def tracked(q: str) -> list[dict[str, Any]]:
        reply = http.get(f"{base_url}/api/v2/tracker/records", params={"q": q, "limit": 50})
        assert reply.status_code == 200, reply.text
        return reply.json()["data"]

    forwarded = tracked(f"recorded:true session:{name}-rec")
    assert sorted(r["return_code"] for r in forwarded) == sorted(statuses)
    assert tracked(f"recorded:true session:{name}-play") == []
    played_calls = tracked(f"recorded:false session:{name}-play")  # the begin action too
    assert len([r for r in played_calls if not r["function"].startswith("/api/")]) == 8
    one = http.get(base_url + forwarded[0]["href"]).json()["data"]
    assert one["recorded"] is True


def test_record_through_the_virtual_prefix(
    http: requests.Session, base_url: str, name: str, upstream: RunningServer
) -> None:
    live = upstream_service(http, upstream, name)
    create_scenario(http, base_url, name)
    begin(http, base_url, name, session=name + "-rec", mode="record", upstream=live)
    here = f"{base_url}/virtual/{name}/{name}-rec"
    recorded = client_calls(here)
    assert json.loads(recorded[3][2])["next"] == f"{here}/me"
    assert recorded[4][1]["location"] == f"{here}/jobs/7"
    end(http, base_url, name, name + "-rec")
    upstream.stop()
    # The links name the session's prefix: the same session plays them back.
    begin(http, base_url, name, session=name + "-rec", mode="playback")
    assert client_calls(here) == recorded


def test_novaclient_recorded_then_played(
    http: requests.Session, base_url: str, name: str, upstream: RunningServer
) -> None:
    tenant = name
    novaclient_for(upstream.url, tenant).servers.create("web-1", "img", "2")
    create_scenario(http, base_url, name)
    port = begin(
        http, base_url, name, session=name + "-rec", mode="record", port=0, upstream=upstream.url
    )["port"]
    here = f"http://127.0.0.1:{port}"

    def list_servers() -> list[str]:
        auth = v2.Password(
            auth_url=here + "/identity/v2.0",
            username=f"user-{name}",
            password="secret",
            tenant_name=tenant,
        )
        nova = nova_client.Client("2", session=ks_session.Session(auth=auth), region_name="ORD")
        return sorted(s.name for s in nova.servers.list())

    assert list_servers() == ["web-1"]
    end(http, base_url, name, name + "-rec")
    stubs = json.dumps([item["stub"] for item in list_stubs(http, base_url, name)])
    assert upstream.url not in stubs  # the catalog's endpoints were rewritten to the port
    assert here in stubs
    assert "x-auth-token" not in stubs.lower()  # novaclient sent one on every call
    upstream.stop()
    begin(http, base_url, name, session=name + "-play", mode="playback", port=port)
    assert list_servers() == ["web-1"]


def test_an_http_proxy_records_and_plays(
    http: requests.Session, base_url: str, name: str, upstream: RunningServer
) -> None:
    live = upstream_service(http, upstream, name)
    create_scenario(http, base_url, name)
    port = begin(http, base_url, name, session=name + "-rec", mode="record", port=0, upstream=live)[
        "port"
    ]
    proxies = {"http": f"http://127.0.0.1:{port}"}
    target = live + "/links"  # the client asks for the upstream's own URL, through the proxy
    first = requests.get(target, proxies=proxies, timeout=10)
    assert first.status_code == 200
    assert json.loads(first.content)["self"] == target  # no rewriting: the client uses URLs
    end(http, base_url, name, name + "-rec")
    [stub] = [item["stub"] for item in list_stubs(http, base_url, name)]
    host = live.split("://")[1].split("/")[0]
    assert stub["request"]["headers"] == {"host": host}
    upstream.stop()
    begin(http, base_url, name, session=name + "-play", mode="playback", port=port)
    again = requests.get(target, proxies=proxies, timeout=10)
    assert (again.status_code, again.content) == (200, first.content)


def test_http_proxy_environment_variable(
    http: requests.Session,
    base_url: str,
    name: str,
    upstream: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = upstream_service(http, upstream, name)
    create_scenario(http, base_url, name)
    port = recording_port(http, base_url, name, live)
    http.trust_env = False  # the admin calls go straight to the server
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    def download() -> bytes:
        with requests.Session() as client:  # trust_env: it reads HTTP_PROXY
            reply = client.get(live + "/logo.png", timeout=10)
            assert reply.status_code == 200
            return reply.content

    assert download() == PNG
    end(http, base_url, name, name + "-rec")
    assert len(list_stubs(http, base_url, name)) == 1
    upstream.stop()
    begin(http, base_url, name, session=name + "-play", mode="playback", port=port)
    assert download() == PNG  # from the stub: the upstream is gone


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    ("upstream_url", "status", "fragment"),
    [
        ("http://127.0.0.1:9", 502, "ConnectError"),  # the discard port: nothing listens
        ("http://127.0.0.1:{silent}", 504, "in time"),  # connected, never answered
    ],
)
def test_an_upstream_that_fails_is_a_502_or_504_and_not_recorded(
    http: requests.Session,
    base_url: str,
    name: str,
    silent_port: int,
    upstream_url: str,
    status: int,
    fragment: str,
) -> None:
    create_scenario(http, base_url, name)
    begin(
        http,
        base_url,
        name,
        session=name + "-rec",
        mode="record",
        upstream=upstream_url.format(silent=silent_port),
        readTimeout=0.5,
    )
    reply = requests.get(f"{base_url}/virtual/{name}/{name}-rec/x", timeout=10)
    assert_error(reply, status, fragment)
    end(http, base_url, name, name + "-rec")
    assert list_stubs(http, base_url, name) == []


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        ({"upstream": "ftp://x"}, "http(s) URL"),
        ({"upstream": "http://x?a=1"}, "query"),
        ({"upstream": "http://x", "readTimeout": 0}, "readTimeout"),
        ({"upstream": "http://x", "record": {"ignore": 1}}, "unknown key 'ignore' in record"),
        ({"upstream": "http://x", "mode": "playback"}, "recording session"),
    ],
)
def test_a_bad_upstream_is_refused(
    http: requests.Session, base_url: str, name: str, action: dict, fragment: str
) -> None:
    create_scenario(http, base_url, name)
    document = {"begin": None, "session": name + "-rec", "mode": "record", **action}
    reply = http.post(f"{base_url}/api/v2/scenarios/objects/{name}/action", json=document)
    assert_error(reply, 400, fragment)


def test_serve_record_option_survives_a_restart(
    http: requests.Session, name: str, upstream: RunningServer, tmp_path
) -> None:
    live = upstream_service(http, upstream, name)
    port = free_port()
    store = f"sqlite:///{tmp_path / 'rec.db'}"
    option = ["--record", f"orders/rec={port}={live}"]
    here = f"http://127.0.0.1:{port}"
    server = RunningServer(store=store, extra_args=option).start()
    try:
        assert requests.get(here + "/jobs/7", timeout=10).text == "pending"
    finally:
        assert server.stop() == 0
    server = RunningServer(store=store, extra_args=option).start()  # still recording there
    try:
        assert requests.get(here + "/jobs/7", timeout=10).text == "pending"
        scenario = "localhost:orders"
        [item] = list_stubs(http, server.url, scenario)
        assert item["stub"]["response"]["body"] == ["pending", "pending"]
        end(http, server.url, scenario, "rec")
        upstream.stop()
        begin(http, server.url, scenario, session="play", mode="playback", port=port)
        assert [requests.get(here + "/jobs/7", timeout=10).text for _ in range(3)] == [
            "pending",
            "pending",
            "pending",
        ]
    finally:
        server.stop()


def test_serve_record_option_is_checked_before_start() -> None:
    stderr = refused_serve("--record", "orders/rec=9001")
    assert "SCENARIO/SESSION=PORT=UPSTREAM" in stderr


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server that sends back what it gets, upper-cased (a stand-in for TLS bytes)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()


def connect(port: int, target: str, early: bytes = b"") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode() + early)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head  # the tunnel's first bytes may follow the head's blank line


def test_connect_tunnels_pass_through_unrecorded(
    http: requests.Session, base_url: str, name: str, upstream: RunningServer, echo_port: int
) -> None:
    live = upstream_service(http, upstream, name)
    create_scenario(http, base_url, name)
    port = recording_port(http, base_url, name, live)
    sock, head = connect(port, f"127.0.0.1:{echo_port}", b"hello ")
    with sock:
        assert head.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"world")
        received = head.partition(b"\r\n\r\n")[2]
        while len(received) < len(b"HELLO WORLD"):
            received += sock.recv(4096)
        assert received == b"HELLO WORLD"
    # A big transfer both ways, through the flow control.
    sock, head = connect(port, f"127.0.0.1:{echo_port}")
    with sock:
        payload = b"x" * 3_000_000
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = b""
        while len(received) < len(payload):
            received += sock.recv(1 << 20)
        sender.join()
        assert received == payload.upper()
    assert list_stubs(http, base_url, name) == []  # nothing of a tunnel is recorded
    assert requests.get(f"http://127.0.0.1:{port}/me", timeout=10).status_code == 404
    end(http, base_url, name, name + "-rec")

    # Elsewhere a CONNECT is refused: a playback session's port, the main port.
    begin(http, base_url, name, session=name + "-play", mode="playback", port=port)
    for where in (port, int(base_url.rsplit(":", 1)[1])):
        sock, head = connect(where, f"127.0.0.1:{echo_port}")
        sock.close()
        assert head.startswith(b"HTTP/1.1 405 "), head


def test_connect_to_nowhere_is_a_502(
    http: requests.Session, base_url: str, name: str, upstream: RunningServer
) -> None:
    live = upstream_service(http, upstream, name)
    create_scenario(http, base_url, name)
    port = recording_port(http, base_url, name, live)
    sock, head = connect(port, "127.0.0.1:9")
    sock.close()
    assert head.startswith(b"HTTP/1.1 502 "), head


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An HTTPS server with a self-signed certificate: (its URL, the certificate's path)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib's name
            body = b"hello over TLS"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", str(cert)
    server.shutdown()


@pytest.mark.parametrize("trust", ["verified", "caBundle", "verify-off", "no-such-bundle"])
def test_an_https_upstream_is_verified_unless_told(
    http: requests.Session, base_url: str, name: str, tls_upstream: tuple[str, str], trust: str
) -> None:
    url, cert = tls_upstream
    options = {
        "caBundle": {"caBundle": cert},
        "verify-off": {"verify": False},
        "no-such-bundle": {"caBundle": cert + ".missing"},
    }.get(trust, {})
    create_scenario(http, base_url, name)
    begin(http, base_url, name, session=name + "-rec", mode="record", upstream=url, **options)
    reply = requests.get(f"{base_url}/virtual/{name}/{name}-rec/hi", timeout=10)
    if trust == "verified":  # a self-signed certificate: refused, with the cause
        assert_error(reply, 502, "CERTIFICATE_VERIFY_FAILED")
    elif trust == "no-such-bundle":
        assert_error(reply, 502, "cannot be read")
    else:
        assert (reply.status_code, reply.text) == (200, "hello over TLS")


def test_one_clients_cookies_never_reach_the_upstream_for_another(
    http: requests.Session, base_url: str, name: str, upstream: RunningServer
) -> None:
    live = upstream_service(http, upstream, name)
    create_scenario(http, base_url, name)
    here = f"http://127.0.0.1:{recording_port(http, base_url, name, live)}"
    with requests.Session() as ann:
        assert ann.post(here + "/login", timeout=10).status_code == 200
        assert ann.get(here + "/me", timeout=10).status_code == 200  # with her cookie
    # Another client, no cookie: the upstream must not see Ann's (its stub wants sid=abc).
    assert requests.get(here + "/me", timeout=10).status_code == 404
