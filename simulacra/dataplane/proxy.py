"""Recording sessions: each request is forwarded to the session's upstream, the client gets
the upstream's answer, and the exchange is stored as a stub of the session's scenario.

A recording session is reached as a playing one is: on a port of its own, through
``/virtual/{scenario}/{session}/``, or as an HTTP proxy (a request in absolute form on the
session's port: ``HTTP_PROXY=http://localhost:9001``). ``Playback.run`` hands a request to
``Recorder.forward`` when its session records an upstream, so the routes stay the same.

The client gets the answer the stub will play, built from the stub document (the same
headers, the same rewritten URLs, the body decoded), so what a test sees while recording is
what it sees in playback. What becomes of an exchange is ``virtual/recording.py``'s; here
are only the forwarding, its failures (502 or 504 in the v2 envelope) and the tracker.
"""

from __future__ import annotations

import logging
import ssl
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from simulacra.dataplane.request import Answer, Request
from simulacra.errors import DomainError
from simulacra.virtual.api_v2 import error_answer
from simulacra.virtual.model import Session, parse_responses
from simulacra.virtual.recording import (
    HOP_BY_HOP,
    Exchange,
    Upstream,
    stub_document,
)
from simulacra.virtual.tracker import BODY_CAPTURE_BYTES, capture, join_headers

if TYPE_CHECKING:
    from simulacra.dataplane.playback import Playback, PlaybackRoute, Target

log = logging.getLogger("simulacra")

# Never forwarded: the connection's own (RFC 9110 7.6.1), the client's Host (the upstream's
# is sent), Accept-Encoding (httpx asks for what it can decode; bodies are stored and played
# decoded) and Expect (the whole body has arrived).
_NOT_FORWARDED = HOP_BY_HOP | {"host", "accept-encoding", "expect"}  # the body is here
# A jar that keeps nothing: the clients' own Cookie headers are forwarded as they come.
_NO_COOKIES = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
# Characters a path keeps as they are when it is sent on (the rest are percent-encoded).
_PATH_SAFE = "/:@!$&'()*+,;=~-._"


class UpstreamFailed(DomainError):
    """The upstream did not answer: refused, unreachable, timed out, TLS, reset (502/504)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Recorder:
    """Forwards the requests of recording sessions, one httpx client per session."""

    def __init__(self, playback: Playback, limit: int) -> None:
        self.playback = playback
        self.limit = limit  # an upstream answer over this many bytes is not relayed (502)
        # (host, session) -> (the upstream settings it was made for, its client)
        self._clients: dict[tuple[str, str], tuple[dict[str, Any], httpx.AsyncClient]] = {}

    async def _client(self, session: Session, upstream: Upstream) -> httpx.AsyncClient:
        key = (session.host, session.name)
        known = self._clients.get(key)
        settings = session.upstream or {}
        if known is not None and known[0] == settings:
            return known[1]
        verify: ssl.SSLContext | bool = upstream.verify
        if upstream.verify and upstream.ca_bundle:
            try:
                verify = ssl.create_default_context(cafile=upstream.ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise UpstreamFailed(
                    f"the session's caBundle {upstream.ca_bundle[:200]!r} cannot be read: {exc}",
                    502,
                ) from None
        client = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(upstream.read_timeout, connect=upstream.connect_timeout),
            follow_redirects=False,  # a redirect is an answer to record, as the client got it
            trust_env=False,  # the server's own environment (HTTP_PROXY...) is not the session's
            cookies=_NO_COOKIES,  # one client's cookies must never ride on another's requests
        )
        if known is not None:  # the session was begun again, with other settings
            await known[1].aclose()
        self._clients[key] = (settings, client)
        return client

    async def close(self) -> None:
        for _settings, client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def forward(
        self, route: PlaybackRoute, request: Request, target: Target, session: Session
    ) -> Answer:
        """Forward ``request`` to the session's upstream; answer what the stub will play."""
        t0 = request.started
        assert session.upstream is not None
        svc = self.playback.svc
        assert svc is not None
        upstream = Upstream.from_dict(session.upstream)
        rules = upstream.rules
        path = target.path if target.path is not None else request.path
        origin = request.text_header(b"host")
        proxied = request.origin  # absolute form: the client asked for this origin
        base = proxied if proxied is not None else upstream.url
        url = base + quote(path, safe=_PATH_SAFE)
        if request.query:
            url += "?" + request.query.decode("latin-1")
        received = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
        headers = [(k, v) for k, v in received if k not in _NOT_FORWARDED]
        try:
            client = await self._client(session, upstream)
            status, answer_headers, body = await self._send(
                client, request.method, url, headers, request.body
            )
        except UpstreamFailed as exc:
            answer = error_answer(exc.status, exc.message)
            if rules.record_failures:
                sent = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers]
                failed = _exchange(request, received, path, proxied, exc.status, sent, answer.body)
                await svc.record_documents(session.scenario, [stub_document(failed, rules)])
            self._track(request, answer, t0, target)
            return answer
        exchange = _exchange(request, received, path, proxied, status, answer_headers, body)
        rewrite = None
        if proxied is None and origin:  # a proxy's client uses the real URLs: none rewritten
            rewrite = (upstream.url, f"{request.scheme}://{origin}{_prefix(request, path)}")
        document = stub_document(exchange, rules, rewrite)
        try:
            [response] = parse_responses(document["response"])
        except DomainError as exc:  # a header no stub may send (not latin-1, a 1xx status...)
            answer = error_answer(502, f"the upstream's answer cannot be recorded: {exc}")
        else:
            answer = self.playback.wires(response)[0]
            await svc.record_documents(session.scenario, [document])
        self._track(request, answer, t0, target)
        return answer

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The upstream's status, headers and (decoded) body; UpstreamFailed if none."""
        where = url.split("?", 1)[0][:200]
        try:
            async with client.stream(method, url, headers=headers, content=body) as reply:
                parts: list[bytes] = []
                size = 0
                async for chunk in reply.aiter_bytes():
                    size += len(chunk)
                    if size > self.limit:
                        raise UpstreamFailed(
                            f"the upstream's answer to {method} {where} is over the"
                            f" {self.limit} byte limit: not relayed, not recorded",
                            502,
                        )
                    parts.append(chunk)
                return reply.status_code, list(reply.headers.multi_items()), b"".join(parts)
        except httpx.TimeoutException as exc:
            raise UpstreamFailed(
                f"the upstream did not answer {method} {where} in time ({_cause(exc)})", 504
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamFailed(
                f"the upstream failed on {method} {where}: {_cause(exc)}", 502
            ) from None

    def _track(self, request: Request, answer: Answer, t0: float, target: Target) -> None:
        tracker = self.playback.tracker
        if tracker.enabled:
            session, scenario = target.notes
            tracker.queue.add(
                capture(
                    request,
                    answer.status,
                    join_headers(answer.headers),
                    len(answer.body),
                    answer.body[:BODY_CAPTURE_BYTES],
                    t0,
                    0,
                    session,
                    scenario,
                    time.perf_counter(),
                    recorded=1,
                )
            )


def _exchange(
    request: Request,
    received: list[tuple[str, str]],
    path: str,
    proxied: str | None,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
) -> Exchange:
    """The request (its headers ``received``, at ``path``, the upstream's) and the answer it
    got, as plain values."""
    return Exchange(
        request.method,
        path,
        request.query.decode("latin-1"),
        received,
        request.body,
        status,
        headers,
        body,
        target_host=_host_of(proxied) if proxied is not None else None,
    )


def _prefix(request: Request, path: str) -> str:
    """What the client's path has before the upstream's: ``/virtual/{scenario}/{session}``
    through the prefix, nothing on the session's own port."""
    if path == request.path:
        return ""
    if path == "/" and not request.path.endswith("/"):
        return request.path
    return request.path[: len(request.path) - len(path)]


def _host_of(origin: str) -> str:
    return origin.partition("://")[2]


def _cause(exc: Exception) -> str:
    """What went wrong, in a line: httpx's message, or its cause's (a refused connection,
    a certificate the upstream's CA did not sign)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return f"{type(exc).__name__}: {text}"[:500]
