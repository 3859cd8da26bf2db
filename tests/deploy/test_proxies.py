"""docs/deploy.md's reverse proxy examples, run as written: nginx and Caddy terminate TLS in front
of a real ringcast; a `wss://` subscriber through the proxy receives a message published with
`POST /publish` through it. With `server.trusted_proxies`, they (and HAProxy, with a PROXY
protocol header) name each client for the per-address limit.

Each example is the doc's fenced block with only the certificate paths, the listening port and
the upstream's port replaced (each replacement must match exactly once, so the doc cannot drift
from what is tested), wrapped in what a test needs around it (nginx's main context, Caddy's
global options: no admin endpoint, loopback only, files in the test's directory). The
certificate is self-signed, made here, for the doc's host name; clients connect to 127.0.0.1
and name that host (SNI, Host), as a browser would after DNS.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import ClientConnection, connect

from ringcast.config import Config
from tests.support.rawws import RawWebSocket, handshake_request
from tests.support.serverproc import ServerProcess
from tests.support.teardown import stop_all

from .helpers import REPO, find_tool, free_port, missing

HOSTNAME = "ringcast.example.com"          # the docs' host name
DOC_CERT = "/etc/ssl/ringcast/fullchain.pem"
DOC_KEY = "/etc/ssl/ringcast/privkey.pem"
DOC_UPSTREAM = "127.0.0.1:8080"
DOC_HAPROXY_PEM = "/etc/ssl/ringcast/ringcast.pem"
START_TIMEOUT = 15.0
TIMEOUT = 10.0


def doc_block(lang: str) -> str:
    """The one fenced block of ``lang`` in docs/deploy.md."""
    blocks = re.findall(rf"^```{lang}\n(.*?)^```", (REPO / "docs/deploy.md").read_text(),
                        re.M | re.S)
    assert len(blocks) == 1, f"docs/deploy.md should have one ```{lang} block, has {len(blocks)}"
    return str(blocks[0])


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the doc's example should have {old!r} once:\n{text}"
    return text.replace(old, new)


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(directory: Path) -> Tls:
    """A self-signed certificate and its key for HOSTNAME, as PEM files (0644: nginx and Caddy
    may read them as another user)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTNAME)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    tls = Tls(directory / "fullchain.pem", directory / "privkey.pem")
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    for path in (tls.cert, tls.key):
        path.chmod(0o644)
    return tls


# -- the proxies ----------------------------------------------------------------------


def proxy_tool(name: str) -> str:
    """The proxy's binary; skipped with the reason when absent, failed under CI."""
    path = find_tool(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/sbin")
                                    if os.access(f"{d}/{name}", os.X_OK)), None)
    if path is None:
        missing(f"`{name}` is not installed (apt-get install {name}; .ci/run does it)")
        raise AssertionError("unreachable")
    return path


def nginx_command(work: Path, tls: Tls, port: int, upstream: int) -> list[str]:
    example = doc_block("nginx")
    example = replace_once(example, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    example = replace_once(example, DOC_CERT, str(tls.cert))
    example = replace_once(example, DOC_KEY, str(tls.key))
    example = replace_once(example, f"server {DOC_UPSTREAM};", f"server 127.0.0.1:{upstream};")
    temp = "".join(f"    {kind}_temp_path {work}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = work / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\nerror_log stderr notice;\n"
        f"events {{}}\nhttp {{\n    access_log {work}/access.log;\n{temp}{example}}}\n")
    return [proxy_tool("nginx"), "-e", "stderr", "-p", str(work), "-c", str(conf)]


def caddy_command(work: Path, tls: Tls, port: int, upstream: int) -> list[str]:
    example = doc_block("caddyfile")
    example = replace_once(example, DOC_CERT, str(tls.cert))
    example = replace_once(example, DOC_KEY, str(tls.key))
    example = replace_once(example, DOC_UPSTREAM, f"127.0.0.1:{upstream}")
    conf = work / "Caddyfile"
    conf.write_text(
        "{\n\tadmin off\n\tdefault_bind 127.0.0.1\n"
        f"\thttp_port {free_port()}\n\thttps_port {port}\n\tauto_https disable_redirects\n"
        f"\tstorage file_system {work}/data\n}}\n\n{example}")
    return [proxy_tool("caddy"), "run", "--adapter", "caddyfile", "--config", str(conf)]


def haproxy_command(work: Path, tls: Tls, port: int, upstream: int) -> list[str]:
    example = doc_block("haproxy")
    combined = work / "ringcast.pem"  # HAProxy reads the certificate and its key from one file
    combined.write_bytes(tls.cert.read_bytes() + tls.key.read_bytes())
    example = replace_once(example, "bind :443 ssl", f"bind 127.0.0.1:{port} ssl")
    example = replace_once(example, DOC_HAPROXY_PEM, str(combined))
    example = replace_once(example, f"server ringcast {DOC_UPSTREAM}",
                           f"server ringcast 127.0.0.1:{upstream}")
    conf = work / "haproxy.cfg"
    conf.write_text(f"global\n    log stderr format raw local0\n\n{example}")
    return [proxy_tool("haproxy"), "-db", "-f", str(conf)]


COMMANDS = {"nginx": nginx_command, "caddy": caddy_command}
"""The HTTP proxies (they send X-Forwarded-For); HAProxy below sends a PROXY header."""


@dataclass
class Proxy:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_proxy(name: str, work: Path, tls: Tls, upstream: int) -> Proxy:
    port = free_port()
    command = {**COMMANDS, "haproxy": haproxy_command}[name](work, tls, port, upstream)
    log = work / f"{name}.log"
    env = {**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work / "data"),
           "XDG_CONFIG_HOME": str(work / "config")}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    proxy = Proxy(name, proc, port, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{proxy.log_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proxy
        except OSError:
            if time.monotonic() >= deadline:
                stop_proxy(proxy)
                raise AssertionError(f"{name} not listening on {port} within {START_TIMEOUT}s:"
                                     f"\n{proxy.log_text()}") from None
            time.sleep(0.05)


def stop_proxy(proxy: Proxy) -> None:
    if proxy.proc.poll() is None:
        proxy.proc.terminate()
        try:
            proxy.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proxy.proc.kill()
            proxy.proc.wait()


# -- the clients ------------------------------------------------------------------------


class ProxiedHttps(http.client.HTTPSConnection):
    """HTTPS to HOSTNAME (its name in SNI, Host and the certificate check) at 127.0.0.1."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__(HOSTNAME, port, timeout=TIMEOUT, context=context)
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def https_publish(port: int, tls: Tls, channel: str, text: str) -> dict[str, object]:
    conn = ProxiedHttps(port, tls.client_context())
    try:
        conn.request("POST", f"/publish/{channel}", body=text.encode(),
                     headers={"Content-Type": "text/plain; charset=utf-8"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200, (response.status, body)
    answer = json.loads(body)
    assert isinstance(answer, dict)
    return answer


# -- the tests --------------------------------------------------------------------------


@pytest.fixture
def ringcast(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    server = ServerProcess.spawn({})
    server.wait_listening()
    yield server
    stop_all([server], request)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_wss_through_the_proxy_receives_a_broadcast(
        name: str, ringcast: ServerProcess, tmp_path: Path) -> None:
    tls = make_certificate(tmp_path)
    proxy = start_proxy(name, tmp_path, tls, ringcast.port)
    try:
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
        with connect(f"wss://{HOSTNAME}:{proxy.port}/news", sock=raw,
                     ssl=tls.client_context(), server_hostname=HOSTNAME,
                     open_timeout=TIMEOUT) as subscriber:
            answer = https_publish(proxy.port, tls, "news", f"hello through {name}")
            assert answer == {"channel": "news", "subscribers": 1}, answer
            assert subscriber.recv(timeout=TIMEOUT) == f"hello through {name}"   # a text frame
    except BaseException:
        print(f"---- {name} log ----\n{proxy.log_text()}")
        raise
    finally:
        stop_proxy(proxy)


def _nginx_seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match is not None, f"not an nginx time: {value!r}"
    return int(match[1]) * units[match[2] or "s"]


def test_nginx_timeouts_outlast_a_ping_interval() -> None:
    """Not run against a proxy (it would take minutes): nginx closes an upgraded connection
    idle for proxy_read_timeout or proxy_send_timeout; ringcast's pings (and their pongs) keep
    it busy more often than that, with room for a late pong."""
    limits = Config().limits
    example = doc_block("nginx")
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = re.findall(rf"^\s*{directive} (\S+);", example, re.M)
        assert _nginx_seconds(value) > limits.ping_interval + limits.ping_timeout, directive


def wss_from(source: str, proxy: Proxy, tls: Tls, channel: str) -> ClientConnection:
    """A ``wss://`` subscriber reaching the proxy from loopback address ``source``."""
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT,
                                   source_address=(source, 0))
    return connect(f"wss://{HOSTNAME}:{proxy.port}/{channel}", sock=raw,
                   ssl=tls.client_context(), server_hostname=HOSTNAME, open_timeout=TIMEOUT)


def upgrade_answer_from(source: str, proxy: Proxy, tls: Tls, channel: str) -> bytes:
    """The head of the proxy's answer to a WebSocket upgrade from ``source``, read by
    `RawWebSocket` on a plain TLS socket (a refused websockets client that times out waits
    on its reader thread, blocked in a TLS read, without a bound)."""
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT,
                                   source_address=(source, 0))
    with tls.client_context().wrap_socket(raw, server_hostname=HOSTNAME) as conn:
        ws = RawWebSocket(conn)
        ws.send(handshake_request(f"/{channel}", Host=f"{HOSTNAME}:{proxy.port}"))
        return ws.read_head(TIMEOUT)


@pytest.mark.parametrize("name", [*sorted(COMMANDS), "haproxy"])
def test_behind_a_trusted_proxy_the_per_address_limit_counts_its_clients(
        name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """docs/deploy.md's ``trusted_proxies``: through the proxy, two clients from two addresses
    each get their one connection, and the second of one client is refused (503). Without
    it all three would be the proxy's (127.0.0.1), and the third refused too. nginx and
    Caddy name the client in X-Forwarded-For, HAProxy in a PROXY protocol v2 header."""
    env: dict[str, object] = {"SERVER_TRUSTED_PROXIES": "127.0.0.1",
                              "LIMITS_MAX_CONNECTIONS_PER_IP": 1,
                              "LOGGING_ACCESS_PER_SECOND": 100}  # in the output on failure
    if name == "haproxy":
        env["SERVER_PROXY_PROTOCOL"] = "true"
    server = ServerProcess.spawn(env)
    server.wait_listening()
    tls = make_certificate(tmp_path)
    proxy = start_proxy(name, tmp_path, tls, server.port)
    try:
        with wss_from("127.0.0.2", proxy, tls, "news") as first:
            refused = upgrade_answer_from("127.0.0.2", proxy, tls, "news")
            assert refused.startswith(b"HTTP/1.1 503 "), refused
            with wss_from("127.0.0.3", proxy, tls, "news") as other:
                answer = https_publish(proxy.port, tls, "news", "both")
                assert answer == {"channel": "news", "subscribers": 2}, answer
                assert first.recv(timeout=TIMEOUT) == other.recv(timeout=TIMEOUT) == "both"
    except BaseException:
        print(f"---- {name} log ----\n{proxy.log_text()}")
        print(f"---- ringcast log ----\n{server.stderr_text()}")
        raise
    finally:
        stop_proxy(proxy)
        stop_all([server], request)
