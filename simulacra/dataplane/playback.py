"""Playback, written once: session -> match -> sequence -> template -> delay -> answer.

Five doors lead to it, each a route of this module; they differ only in how the request
names its session (a path and a header, a ``scenario:session`` header, a v1 argument, the
port it arrived on, a path prefix), in which request is matched (Mirage's routes honour a
proxy's ``Stubo-Request-*`` headers; a bound port or prefix plays the request as it is) and
in how the answer is rendered (the stub's own response, or the matcher's JSON parts).
Everything else, the steps, the errors in Mirage's v2 envelope and the tracker's record,
is ``Playback``'s, once.

The steps are synchronous when nothing has to wait, so most playbacks are answered with no
task: the answer, or an awaitable of it when the session or index must come from the store
or a delay policy holds the answer back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from simulacra.dataplane import Declared
from simulacra.dataplane.proxy import Recorder
from simulacra.dataplane.request import Answer, Headers, Later, Request, json_answer
from simulacra.errors import DomainError, Invalid, NoMatch, NotFound, Unavailable
from simulacra.virtual.api_v2 import STATUS_OF, error_answer
from simulacra.virtual.matching import PlaybackRequest
from simulacra.virtual.model import (
    Response,
    Session,
    check_name,
    header_lines,
    normalize_host,
    qualify,
)
from simulacra.virtual.service import Awaiting, VirtualService
from simulacra.virtual.tracker import BODY_CAPTURE_BYTES, capture, join_headers
from simulacra.virtual.tracking import Tracker

log = logging.getLogger("simulacra")

STUBS_PREFIX = "/api/v2/scenarios/objects/"
STUBS_SUFFIX = "/stubs"
MATCHER_PATH = "/api/v2/matcher"
V1_PATH = "/stubo/api/get/response"
# A session on the main port, for where only one port is reachable: /virtual/{scenario}/
# {session}/users/1 plays /users/1. No Mimic or Mirage path starts so.
VIRTUAL_PREFIX = "/virtual/"
INTERNAL_ERROR = "internal error; the server log has the details"


# What a stub's response sends --------------------------------------------------------

# The answer, and the tracker's header block and body start for it.
Wire = tuple[Answer, bytes, bytes]
_NO_BODY = frozenset({204, 304})
_FRAMING = frozenset({"content-length", "transfer-encoding"})


def build_wire(response: Response) -> Wire:
    """What a stub's response sends: header names lower-cased, the body in UTF-8 framed by
    its own Content-Length (none for a status without a body); its fault or slow body."""
    # The framing is the server's: a stub's own Content-Length or Transfer-Encoding (recorded,
    # or wrong for a rendered template) would leave a client waiting or cut the body.
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in header_lines(response.headers)
        if k.lower() not in _FRAMING
    ]
    body = response.payload
    status = response.status
    if not (status < 200 or status in _NO_BODY):
        headers.append((b"content-length", b"%d" % len(body)))
    dribble = response.dribble
    answer = Answer(
        status,
        headers,
        body,
        fault=response.fault,
        dribble=None if dribble is None else (dribble[0], dribble[1] / 1000),
    )
    return answer, join_headers(headers), body[:BODY_CAPTURE_BYTES]


class Wires:
    """``build_wire`` once per stub response, not once per playback (an Answer is never
    changed by the servers that write it, so one serves every playback).

    Keyed by the response's identity, holding it weakly: the stub's responses live as long
    as their scenario's index, and a rendered template is a new response each time (its
    entry dies with it). Bounded, since the dead entries of templates accumulate.
    """

    MAX = 50_000

    def __init__(self) -> None:
        self.known: dict[int, tuple[weakref.ref[Response], Wire]] = {}

    def __call__(self, response: Response) -> Wire:
        entry = self.known.get(id(response))
        if entry is not None and entry[0]() is response:
            return entry[1]
        wire = build_wire(response)
        if len(self.known) >= self.MAX:
            self.known.clear()
        self.known[id(response)] = (weakref.ref(response), wire)
        return wire


# Where a request plays ---------------------------------------------------------------


class Target:
    """Where a request plays: the session it names, the scenario that session must play
    (when the request names one), the request's headers (read once) and, for a request
    played at a path other than its own, that path; and the tracker's notes."""

    __slots__ = ("headers", "host", "notes", "path", "scenario", "session")

    def __init__(
        self,
        host: str,
        session: str,
        headers: RequestHeaders,
        scenario: str | None = None,
        path: str | None = None,
        notes: tuple[str | None, str | None] = (None, None),
    ) -> None:
        self.host = host
        self.session = session
        self.headers = headers
        self.scenario = scenario
        self.path = path
        self.notes = notes  # (session, scenario) for the record, when the path cannot say


class RequestHeaders:
    """A request's headers read once: each name's last value (``all``, as matching reads
    them) and its first (``first``, as the routes read the headers that name a session)."""

    __slots__ = ("all", "raw", "unique")

    def __init__(self, raw: Headers) -> None:
        self.raw = raw
        self.all = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
        self.unique = len(self.all) == len(raw)  # no name repeats: the first is the last

    def first(self, name: str) -> str | None:
        if self.unique:
            return self.all.get(name)
        key = name.encode("latin-1")
        return next((v.decode("latin-1") for k, v in self.raw if k == key), None)


class Playback:
    """The steps every playback route shares, and what they read."""

    def __init__(self, tracker: Tracker, limit: int) -> None:
        self.tracker = tracker
        self.queue = tracker.queue
        self.svc: VirtualService | None = None  # the app's startup sets it
        self.wires = Wires()
        self.recorder = Recorder(self, limit)

    def run(self, route: PlaybackRoute, request: Request) -> Answer | Later:
        t0 = request.started
        target: Target | None = None
        svc = self.svc
        try:
            if svc is None:
                raise _starting()
            target = route.target(request)
            session = svc.cached_session(target.host, target.session)
            if session is None:
                return self._later(route, request, target, t0)
            route.check(target, session)
            if route.real_paths and session.records_upstream:
                return self._recorded(route, request, target, session)
            matched = route.matched(request, target)
            played = svc.playback_now(session, matched)
            if played is None:  # the index, or the session, from the store
                return self._later(route, request, target, t0, matched)
            if isinstance(played, Awaiting):  # a sequence's position, from the store
                return self._positioned(route, request, target, session, played, t0)
        except DomainError as exc:
            return self.refused(route, request, exc, t0, target)
        except Exception:
            return self.failed(route, request, t0, target)
        stub_id, response = played
        if response.delay_policy:
            return self._delayed(route, request, target, session, stub_id, response, t0)
        return self.answered(route, request, target, stub_id, response, t0, 0)

    def _positioned(
        self,
        route: PlaybackRoute,
        request: Request,
        target: Target,
        session: Session,
        awaiting: Awaiting,
        t0: float,
    ) -> asyncio.Future[Answer]:
        """``run``'s answer once the store gives the sequence's position: a future set from
        the position's callback, rather than a task running ``_later``'s coroutines for
        every such playback (whose second match and session lookup it skips too)."""
        svc = self.svc
        assert svc is not None
        position = awaiting.position
        loop = position.get_loop()  # not get_running_loop(): that costs a system call
        answer: asyncio.Future[Answer] = loop.create_future()

        def answered(stub_id: str, response: Response, delay: int) -> None:
            if answer.done():  # whoever awaited it was cancelled (an ASGI server's)
                return
            try:
                result = self.answered(route, request, target, stub_id, response, t0, delay)
            except Exception:  # a callback's exception would leave the answer unset
                result = self.failed(route, request, t0, target)
            answer.set_result(result)

        def positioned(done: asyncio.Future[int]) -> None:
            if done.cancelled():  # the store closing: the server stopping
                answer.cancel()
                return
            if answer.done():
                return
            try:
                stub_id, response = awaiting.answer(done.result())
                policy = response.delay_policy
                delay = svc.delay_ms(session.host, policy) if policy else 0
            except DomainError as exc:
                answer.set_result(self.refused(route, request, exc, t0, target))
                return
            except Exception:
                answer.set_result(self.failed(route, request, t0, target))
                return
            if delay:  # its delay policy holds the answer, as ``_delay`` does
                loop.call_later(delay / 1000, answered, stub_id, response, delay)
            else:
                answered(stub_id, response, 0)

        position.add_done_callback(positioned)
        return answer

    async def _later(
        self,
        route: PlaybackRoute,
        request: Request,
        target: Target,
        t0: float,
        matched: PlaybackRequest | None = None,
    ) -> Answer:
        """``run``'s steps when the session, the stub index or a sequence's position must
        come from the store (``matched``: the request as ``run`` parsed it, if it did)."""
        svc = self.svc
        assert svc is not None
        try:
            session = await svc.find_session(target.host, target.session)
            route.check(target, session)
            if route.real_paths and session.records_upstream:
                return await self._recorded(route, request, target, session)
            if matched is None:
                matched = route.matched(request, target)
            stub_id, response = await svc.playback(session, matched, route.real_paths)
            delay = await self._delay(svc, session, response)
        except DomainError as exc:
            return self.refused(route, request, exc, t0, target)
        except Exception:
            return self.failed(route, request, t0, target)
        return self.answered(route, request, target, stub_id, response, t0, delay)

    async def _recorded(
        self, route: PlaybackRoute, request: Request, target: Target, session: Session
    ) -> Answer:
        """A recording session's request: forwarded upstream, stored (``Recorder``)."""
        try:
            return await self.recorder.forward(route, request, target, session)
        except DomainError as exc:  # the scenario deleted meanwhile, a stub refused...
            return self.refused(route, request, exc, request.started, target)
        except Exception:
            return self.failed(route, request, request.started, target)

    async def _delayed(
        self,
        route: PlaybackRoute,
        request: Request,
        target: Target,
        session: Session,
        stub_id: str,
        response: Response,
        t0: float,
    ) -> Answer:
        assert self.svc is not None
        delay = await self._delay(self.svc, session, response)
        return self.answered(route, request, target, stub_id, response, t0, delay)

    @staticmethod
    async def _delay(svc: VirtualService, session: Session, response: Response) -> int:
        """Hold the answer for its delay policy (ms); sleeping lets other requests run."""
        if not response.delay_policy:
            return 0
        ms = svc.delay_ms(session.host, response.delay_policy)
        if ms:
            await asyncio.sleep(ms / 1000)
        return ms

    def answered(
        self,
        route: PlaybackRoute,
        request: Request,
        target: Target,
        stub_id: str,
        response: Response,
        t0: float,
        delay: int,
    ) -> Answer:
        """A stub's answer (``stub_id``: the stub), tracked."""
        answer, header_block, body_start = route.render(self, response)
        if self.tracker.enabled:  # the queue directly: this is every playback's cost
            session, scenario = target.notes
            self.queue.add(
                capture(
                    request,
                    0 if answer.fault else answer.status,
                    header_block,
                    len(answer.body),
                    body_start,
                    t0,
                    delay,
                    session,
                    scenario,
                    stub_id=stub_id,
                )
            )
        return answer

    def refused(
        self,
        route: PlaybackRoute,
        request: Request,
        error: DomainError,
        t0: float,
        target: Target | None,
    ) -> Answer:
        answer = route.error(self, request, error, target)
        self._note(request, answer, t0, target)
        return answer

    def failed(
        self, route: PlaybackRoute, request: Request, t0: float, target: Target | None
    ) -> Answer:
        log.exception("unhandled error on %s %s", request.method, request.path[:200])
        answer = error_answer(500, INTERNAL_ERROR)
        self._note(request, answer, t0, target)
        return answer

    def _note(self, request: Request, answer: Answer, t0: float, target: Target | None) -> None:
        body = answer.body
        session, scenario = target.notes if target is not None else (None, None)
        self.tracker.note(
            request,
            answer.status,
            join_headers(answer.headers),
            len(body),
            body[:BODY_CAPTURE_BYTES],
            t0,
            0,
            session,
            scenario,
        )

    def near_misses(
        self, route: PlaybackRoute, request: Request, target: Target | None, error: NoMatch
    ) -> list[dict[str, Any]]:
        """The stubs that came closest to the request (for a 404), best first."""
        if error.near_misses is not None:  # found with the match, off the loop
            return [miss.to_dict() for miss in error.near_misses]
        svc = self.svc
        if svc is None or target is None:
            return []
        session = svc.cached_session(target.host, target.session)
        if session is None:
            return []
        played = route.matched(request, target)
        return [miss.to_dict() for miss in svc.near_misses(session, played)]


def _starting() -> DomainError:
    return Unavailable("the server is starting")


# The routes --------------------------------------------------------------------------


class PlaybackRoute:
    """One door to playback: a ``dataplane.Route`` over ``Playback``'s steps."""

    # Plays the request at the path the client sent (a bound port, the /virtual/ prefix): a
    # 404 names the stubs that came closest, and a recording session forwards it upstream.
    real_paths = False

    def __init__(self, playback: Playback) -> None:
        self.playback = playback
        # ``answer(request)``: Playback.run for this route, bound once (no frame of its own).
        self.answer: Callable[[Request], Answer | Later] = functools.partial(playback.run, self)

    def refuse(self, request: Request, error: DomainError) -> Answer:
        return self.playback.refused(self, request, error, request.started, None)

    def target(self, request: Request) -> Target:
        raise NotImplementedError

    def check(self, target: Target, session: Session) -> None:
        """The session plays the scenario the request names, if it names one."""
        if target.scenario is not None and session.scenario != target.scenario:
            raise self.unrelated(session, target.scenario)

    def unrelated(self, session: Session, scenario: str) -> DomainError:
        return Invalid(f"Session {session.name} plays scenario {session.scenario}, not {scenario}")

    def matched(self, request: Request, target: Target) -> PlaybackRequest:
        """The request stubs are matched against: Mirage's routes read a proxy's
        ``Stubo-Request-*`` headers (method, path, query and headers of the real call)."""
        return PlaybackRequest.from_proxy_headers(
            request.method,
            request.path,
            request.query.decode("latin-1"),
            target.headers.all,
            request.body.decode("utf-8", errors="replace"),
        )

    def render(self, playback: Playback, response: Response) -> Wire:
        """The stub's own response: (the answer, its header block and body start)."""
        entry = playback.wires.known.get(id(response))  # Wires.__call__'s hit, inlined
        if entry is not None and entry[0]() is response:
            return entry[1]
        return playback.wires(response)

    def error(
        self, playback: Playback, request: Request, error: DomainError, target: Target | None
    ) -> Answer:
        return error_answer(STATUS_OF.get(type(error), 400), error.message)


_scenarios: dict[tuple[str, str | None, str | None], str] = {}


def scenario_of(name: str, target_host: str | None, host: str | None) -> str:
    """The ``host:name`` key of a scenario named in a path: ``target_host`` or the Host
    header's namespace (memoized: a run plays a few scenarios many times)."""
    key = (name, target_host, host)
    scenario = _scenarios.get(key)
    if scenario is None:
        where = target_host or normalize_host(host or "localhost")
        scenario = qualify(name, where.lower())  # Invalid is raised, never remembered
        if len(_scenarios) >= 1024:  # invented Host headers must not grow it forever
            _scenarios.clear()
        _scenarios[key] = scenario
    return scenario


class StubsPlayback(PlaybackRoute):
    """Play back: the matching stub's status, headers and body (``session`` header)."""

    def target(self, request: Request) -> Target:
        name = request.path[len(STUBS_PREFIX) : -len(STUBS_SUFFIX)]
        headers = RequestHeaders(request.headers)
        scenario = scenario_of(name, headers.first("target_host"), headers.first("host"))
        session = headers.first("session") or headers.first("stubo-request-session")
        if not session:
            raise Invalid("the 'session' header is missing")
        return Target(scenario.rpartition(":")[0], session, headers, scenario)


MATCHER_USAGE = "the 'session' header must be 'scenario:session' (or 'host:scenario:session')"


class MatcherPlayback(PlaybackRoute):
    """Play back, answering the stub's response as JSON parts for a proxy."""

    def target(self, request: Request) -> Target:
        headers = RequestHeaders(request.headers)
        key = headers.first("session")
        parts = key.split(":") if key else []
        if len(parts) not in (2, 3) or not all(parts):
            raise Invalid(MATCHER_USAGE)
        *scenario_part, session = parts
        try:
            host = normalize_host(headers.first("host") or "localhost")
            scenario = qualify(":".join(scenario_part), host)
            check_name("session", session)
        except Invalid as exc:
            raise Invalid(f"{MATCHER_USAGE}: {exc.message}") from None
        return Target(scenario.rpartition(":")[0], session, headers, scenario)

    def unrelated(self, session: Session, scenario: str) -> DomainError:
        return NotFound(f"Session {session.name} not found in scenario {scenario}")

    def render(self, playback: Playback, response: Response) -> Wire:
        # Mirage never delayed the matcher; a proxy wants the delay too (compatibility.md).
        parts = {"body": response.body, "headers": response.headers, "statusCode": response.status}
        answer = json_answer(200, orjson.dumps(parts))
        return answer, join_headers(answer.headers), answer.body[:BODY_CAPTURE_BYTES]

    def error(
        self, playback: Playback, request: Request, error: DomainError, target: Target | None
    ) -> Answer:
        status = 404 if type(error) is NoMatch else STATUS_OF.get(type(error), 400)
        return error_answer(status, error.message)


class V1Playback(PlaybackRoute):
    """Play back: the matching stub's status, headers and body (session header or arg)."""

    def target(self, request: Request) -> Target:
        headers = RequestHeaders(request.headers)
        name = headers.first("stubo-request-session")
        if not name:
            args = parse_qsl(request.query.decode("latin-1"), keep_blank_values=True)
            value = next((v for k, v in reversed(args) if k == "session"), None)
            # Mirage strips a ",..." suffix from the argument (command files add one).
            name = value.split(",", 1)[0] if value else None
        if not name:
            raise Invalid("no session: send the 'Stubo-Request-Session' header or a 'session' arg")
        host = normalize_host(headers.first("host") or "localhost")
        return Target(host, name, headers, notes=(name, None))


class PlainPlayback(PlaybackRoute):
    """A session played at real paths: the request is matched as the client sent it, and a
    request no stub matches gets a 404 naming the stubs that came closest."""

    real_paths = True

    def matched(self, request: Request, target: Target) -> PlaybackRequest:
        return PlaybackRequest.from_headers(
            request.method,
            request.path if target.path is None else target.path,
            request.query.decode("latin-1"),
            target.headers.all,
            request.body.decode("utf-8", errors="replace"),
        )

    def unrelated(self, session: Session, scenario: str) -> DomainError:
        return NotFound(f"Session {session.name} not found in scenario {scenario}")

    def error(
        self, playback: Playback, request: Request, error: DomainError, target: Target | None
    ) -> Answer:
        if type(error) is not NoMatch:
            return super().error(playback, request, error, target)
        try:
            misses = playback.near_misses(self, request, target, error)
        except Exception:  # the 404 matters more than its diagnosis
            log.exception("near misses failed on %s", request.path[:200])
            misses = []
        path = request.path if target is None or target.path is None else target.path
        return error_answer(
            404, f"no stub matches {request.method} {path[:200]}", nearMisses=misses
        )


class BoundPlayback(PlainPlayback):
    """Every request on a session's own port plays that session."""

    def __init__(self, playback: Playback, host: str, session: str) -> None:
        super().__init__(playback)
        self.host = host
        self.session = session

    def records(self) -> bool:
        """Its session records an upstream now."""
        svc = self.playback.svc
        session = svc.cached_session(self.host, self.session) if svc is not None else None
        return session is not None and session.records_upstream

    def target(self, request: Request) -> Target:
        svc = self.playback.svc
        session = svc.cached_session(self.host, self.session) if svc is not None else None
        scenario = session.scenario if session is not None else None
        headers = RequestHeaders(request.headers)
        return Target(self.host, self.session, headers, notes=(self.session, scenario))


_prefixed: dict[tuple[str, str, str | None], tuple[str, str]] = {}


class PrefixPlayback(PlainPlayback):
    """``/virtual/{scenario}/{session}/{path}`` plays ``/{path}`` on the main port."""

    def target(self, request: Request) -> Target:
        scenario_name, rest = request.path[len(VIRTUAL_PREFIX) :].partition("/")[::2]
        session, slash, path = rest.partition("/")
        headers = RequestHeaders(request.headers)
        host = headers.first("host")
        key = (scenario_name, session, host)
        known = _prefixed.get(key)  # memoized, as scenario_of: a run repeats a few
        if known is None:
            if not scenario_name or not session:
                raise Invalid(
                    f"a virtual path is {VIRTUAL_PREFIX}{{scenario}}/{{session}}/{{path}},"
                    f" got {request.path[:200]!r}"
                )
            scenario = qualify(scenario_name, normalize_host(host or "localhost"))
            check_name("session", session)
            if len(_prefixed) >= 1024:
                _prefixed.clear()
            known = _prefixed[key] = (scenario, scenario.rpartition(":")[0])
        scenario, where = known
        return Target(
            where, session, headers, scenario, "/" + path if slash else "/", (session, scenario)
        )


def is_v1(path: str) -> bool:
    return path.startswith(V1_PATH) and path[len(V1_PATH) : len(V1_PATH) + 1] in ("", "/")


class PostOnly:
    """Any other method on a POST-only playback path: 405 in the envelope, as Starlette's
    router answers it for the admin routes (untracked, as those are)."""

    def answer(self, request: Request) -> Answer:
        return error_answer(405, f"method {request.method} is not allowed on {request.path}")

    def refuse(self, request: Request, error: DomainError) -> Answer:
        return self.answer(request)  # the method is wrong whatever the body


class PlaybackRoutes:
    """The playback routes, one per door, and the bound ports' (``DataPlane.claim`` picks)."""

    def __init__(self, tracker: Tracker, limit: int = 10 * 1024 * 1024) -> None:
        self.playback = Playback(tracker, limit)
        self.stubs = StubsPlayback(self.playback)
        self.matcher = MatcherPlayback(self.playback)
        self.v1 = V1Playback(self.playback)
        self.prefix = PrefixPlayback(self.playback)
        self.post_only = PostOnly()
        self.bound: dict[int, BoundPlayback] = {}  # port -> its session's route
        self.declared = [
            Declared("POST", STUBS_PREFIX + "{name}" + STUBS_SUFFIX, StubsPlayback),
            Declared("POST", MATCHER_PATH, MatcherPlayback),
            Declared("POST", V1_PATH, V1Playback),
            Declared("POST", V1_PATH + "/{rest:path}", V1Playback),
            Declared("any", VIRTUAL_PREFIX + "{scenario}/{session}/{path}", PrefixPlayback),
            Declared("any", "(any path on a session's own port)", BoundPlayback),
        ]

    def bind(self, port: int, host: str, session: str) -> None:
        self.bound[port] = BoundPlayback(self.playback, host, session)

    def unbind(self, port: int) -> None:
        self.bound.pop(port, None)
