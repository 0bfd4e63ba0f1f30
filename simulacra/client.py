"""Typed Python clients of a running Simulacra, over httpx: ``Simulacra`` (sync) and
``AsyncSimulacra`` (async), with the same methods. Scenarios; recording and playing sessions
as context managers (on a port of their own or under ``/virtual/``, recording an upstream or
given stubs); archives and HAR files; delay policies; the tracker, a page at a time; resets
and health; the cloud mocks' control plane (the clock, presets, behaviors).

    sim = Simulacra("http://localhost:8900")
    with sim.recording("orders") as rec:
        rec.stub({"method": "GET", "urlPath": "/orders/1"}, {"status": 200, "body": "one"})
    with sim.playing("orders", port=0) as play:
        httpx.get(play.url + "/orders/1").text   # "one"

    async with AsyncSimulacra("http://localhost:8900") as sim:
        async with sim.recording("orders") as rec:
            await rec.stub({"method": "GET", "urlPath": "/orders/2"}, {"body": "two"})

Each API call is described once, in ``_Calls``, as a ``Call`` value: what is sent and how the
answer is read. Its body is built from the types the server converts its input to
(``simulacra/models.py``, which the OpenAPI document is generated from), so a document the
server would refuse is refused here, before any request, with the server's status (400) and
message. The two clients only send those values. The server's refusals come back as
``SimulacraError`` with the status and the server's message. The pytest plugin
(``simulacra.testing``) gives a ``Simulacra`` per test, reset afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
import msgspec
from msgspec import UNSET, Struct

from simulacra import models
from simulacra.errors import Invalid
from simulacra.models import (
    NDJSON,
    ArchiveImported,
    BehaviorCreated,
    BehaviorDocument,
    Behaviors,
    DelayPolicyDocument,
    DelayPolicyPut,
    DelayPolicyReply,
    DelayPolicyView,
    ExportQuery,
    ForceArgs,
    HarImport,
    HarImported,
    Health,
    RecordRules,
    ResetDone,
    ScenarioCreate,
    ScenarioDetail,
    ScenarioRef,
    SessionAction,
    SessionBegun,
    StubDocument,
    StubHeaders,
    StubListed,
    StubsImported,
    StubStored,
    Tick,
    Ticked,
    TrackerPage,
    TrackerQuery,
    TrackerRecord,
)

T = TypeVar("T")

SCENARIOS = "/api/v2/scenarios"
DELAY_POLICIES = "/api/v2/delay-policy"
TRACKER = "/api/v2/tracker/records"
RESET = "/api/v2/reset"
HEALTH = "/health"
OPENAPI = "/api/v2/openapi.json"
TICK = "/mimic/v1.1/tick"
PRESETS = "/mimic/v1.0/presets"
IDENTITY_AUTH_BEHAVIORS = "/mimic/v1.1/IdentityControlAPI/behaviors/auth"
# Mimic's layout, /mimicking/<Key>-<6 hex>/<REGION>/v2/<tenant>: the hex digits are derived
# from the key (simulacra/cloud/catalog.py), so they never change. Written out rather than
# imported: importing the cloud mocks would load the server (tests/test_client.py checks
# every path the client sends against the OpenAPI document).
NOVA_CONTROL = "/mimicking/NovaControlApi-8fb4c5/{region}/v2/{tenant}"
CLB_CONTROL = "/mimicking/LoadBalancerControlApi-58a5fc/{region}/v2/{tenant}"

JSON = {"content-type": "application/json"}
# A JSON object, or an instance of the model it converts to.
Document: TypeAlias = Mapping[str, Any] | Struct


class SimulacraError(Exception):
    """The server refused a call (or would have: the client refuses a document the server's
    types refuse, with the same 400 and message): its HTTP status and the message of its
    error envelope."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


# One call as a value ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what is sent, and ``read``, how its answer becomes the result.
    Sent as it is by either client."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    body: bytes | None = None  # JSON, encoded from its model
    headers: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    # Error statuses that are answers of this call (read by ``read``): health's 503 (the
    # store does not answer), 422 when creating a scenario only if it is missing.
    answers: frozenset[int] = frozenset()
    # Sent first, their results dropped: the scenario a recording creates when missing.
    before: tuple[Call[Any], ...] = ()
    # Other httpx arguments, as given to ``call`` (the one call not built from a model).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``request`` (httpx's Client and AsyncClient alike)."""
        arguments = dict(self.extra)
        headers = {**(JSON if self.body is not None else {}), **(self.headers or {})}
        given = {"params": self.params, "content": self.body, "files": self.files}
        arguments.update({key: value for key, value in given.items() if value is not None})
        if headers:
            arguments["headers"] = headers
        return arguments

    def outcome(self, reply: httpx.Response) -> T:
        """The result of the answer, or ``SimulacraError`` when it is a refusal."""
        if reply.is_error and reply.status_code not in self.answers:
            raise SimulacraError(reply.status_code, _message(reply))
        return self.read(reply)


class _Enveloped(Struct):
    """Mirage's ``{"version", "data"}``: ``data`` kept raw, to be decoded as its type."""

    data: msgspec.Raw


def _decoded(reply: httpx.Response, model: type[T]) -> T:
    return msgspec.json.decode(reply.content, type=model)


def _data(reply: httpx.Response, model: type[T]) -> T:
    """The ``data`` of an answer in Mirage's envelope, as ``model``."""
    return msgspec.json.decode(_decoded(reply, _Enveloped).data, type=model)


def _nothing(reply: httpx.Response) -> None:
    return None


def _loose(reply: httpx.Response) -> Any:
    """Any answer: its ``data`` (v2 envelope), its JSON, its bytes, or None when empty."""
    if not reply.content:
        return None
    if reply.headers.get("content-type", "").startswith("application/json"):
        body = reply.json()
        return body["data"] if isinstance(body, dict) and "data" in body else body
    return reply.content


def _message(reply: httpx.Response) -> str:
    """The message of a refusal, whichever API family's envelope it is in."""
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "message" in body:
            return str(body["message"])
    return reply.text[:500]


def _encoded(document: Any, model: type[Struct]) -> bytes:
    """``document`` converted to ``model`` as the server converts it, encoded; refused here
    as the server would refuse it (a misspelt key: which keys are known)."""
    if isinstance(document, Mapping) and not isinstance(document, dict):
        document = dict(document)
    plain = msgspec.to_builtins(document)
    try:
        converted = models.convert(plain, model)
    except Invalid as exc:
        raise SimulacraError(400, exc.message) from None
    return msgspec.json.encode(converted)


def _args(value: Struct) -> dict[str, str]:
    """A query string or header set from its model (keys not given stay absent)."""
    args: dict[str, str] = msgspec.to_builtins(value)
    return args


def _segment(name: str) -> str:
    return quote(name, safe=":")  # ":": a scenario of another host is ``host:name``


def _object(document: Mapping[str, Any | None]) -> dict[str, Any]:
    """A JSON object of the options given (None: not given, the server's default)."""
    return {key: value for key, value in document.items() if value is not None}


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class BehaviorEvent:
    """An event the cloud mocks inject faults into, by the behaviors registered for it:
    identity's authentication (one registry for the service), or a tenant's server or
    load-balancer creation in one region. Names and criteria: docs/implementation.md."""

    path: str

    @classmethod
    def identity_auth(cls) -> BehaviorEvent:
        """``POST /identity/v2.0/tokens`` (and v3): criteria ``username``, ``tenant_id``."""
        return cls(IDENTITY_AUTH_BEHAVIORS)

    @classmethod
    def server_creation(cls, tenant: str, region: str = "ORD") -> BehaviorEvent:
        """Nova's server creation: criteria ``server_name``, ``metadata``."""
        control = NOVA_CONTROL.format(region=_segment(region), tenant=_segment(tenant))
        return cls(control + "/behaviors/creation")

    @classmethod
    def load_balancer_creation(cls, tenant: str, region: str = "ORD") -> BehaviorEvent:
        """Cloud Load Balancers' creation: criteria ``loadbalancer_name``, ``metadata``."""
        control = CLB_CONTROL.format(region=_segment(region), tenant=_segment(tenant))
        return cls(control + "/behaviors/creation")


@dataclass(frozen=True)
class _TrackedPage:
    records: list[dict[str, Any]]
    following: Call[_TrackedPage] | None  # None: this was the last page


class _Calls:
    """Every call the clients make, described once: path, query, body (built from the
    server's own input types) and how the answer is read."""

    @staticmethod
    def raw(method: str, path: str, options: Mapping[str, Any]) -> Call[Any]:
        return Call(method, path, _loose, extra=options)

    # scenarios

    @staticmethod
    def create_scenario(name: str) -> Call[ScenarioRef]:
        body = _encoded({"scenario": name}, ScenarioCreate)
        return Call("PUT", SCENARIOS, lambda r: _decoded(r, ScenarioRef), body=body)

    @staticmethod
    def create_scenario_if_missing(name: str) -> Call[None]:
        body = _encoded({"scenario": name}, ScenarioCreate)
        # 422: it exists already, as Mirage says.
        return Call("PUT", SCENARIOS, _nothing, body=body, answers=frozenset({422}))

    @staticmethod
    def scenarios() -> Call[list[ScenarioDetail]]:
        return Call("GET", f"{SCENARIOS}/detail", lambda r: _data(r, list[ScenarioDetail]))

    @staticmethod
    def delete_scenario(name: str) -> Call[None]:
        params = _args(ForceArgs(force="true"))
        return Call("DELETE", f"{SCENARIOS}/objects/{_segment(name)}", _nothing, params=params)

    @staticmethod
    def stubs(scenario: str) -> Call[list[dict[str, Any]]]:
        def read(reply: httpx.Response) -> list[dict[str, Any]]:
            return [listed.stub for listed in _data(reply, list[StubListed])]

        return Call("GET", f"{SCENARIOS}/objects/{_segment(scenario)}/stubs", read)

    @staticmethod
    def import_stubs(
        scenario: str, documents: Iterable[Mapping[str, Any]], session: str | None
    ) -> Call[StubsImported]:
        # NDJSON, each document checked as the server checks it; a refusal names its index.
        lines = []
        for i, document in enumerate(documents):
            try:
                lines.append(_encoded(document, StubDocument))
            except SimulacraError as exc:
                raise SimulacraError(400, f"stub {i}: {exc.message}") from None
        headers = {"content-type": NDJSON}
        if session is not None:
            headers.update(_args(StubHeaders(session=session)))
        return Call(
            "POST",
            f"{SCENARIOS}/objects/{_segment(scenario)}/stubs/import",
            lambda r: _data(r, StubsImported),
            extra={"content": b"\n".join(lines)},
            headers=headers,
        )

    @staticmethod
    def put_stub(
        scenario: str,
        session: str,
        request: Mapping[str, Any],
        response: Mapping[str, Any] | list[Mapping[str, Any]],
        priority: int | None,
    ) -> Call[str]:
        key = "responses" if isinstance(response, list) else "response"
        document = _object({"request": request, key: response, "priority": priority})
        return Call(
            "PUT",
            f"{SCENARIOS}/objects/{_segment(scenario)}/stubs",
            lambda r: _data(r, StubStored).key,
            body=_encoded(document, StubDocument),
            headers=_args(StubHeaders(session=session)),
        )

    # sessions

    @staticmethod
    def action(scenario: str, document: Document) -> Call[dict[str, Any]]:
        return Call(
            "POST",
            f"{SCENARIOS}/objects/{_segment(scenario)}/action",
            lambda r: _data(r, dict[str, Any]),
            body=_encoded(document, SessionAction),
        )

    @staticmethod
    def begin(scenario: str, document: dict[str, Any]) -> Call[SessionBegun]:
        return Call(
            "POST",
            f"{SCENARIOS}/objects/{_segment(scenario)}/action",
            lambda r: _data(r, SessionBegun),
            body=_encoded({"begin": None, **_object(document)}, SessionAction),
        )

    @staticmethod
    def begin_recording(
        scenario: str,
        session: str | None,
        *,
        upstream: str | None,
        port: int | None,
        append: bool,
        verify: bool | None,
        ca_bundle: str | None,
        connect_timeout: float | None,
        read_timeout: float | None,
        record: RecordRules | Mapping[str, Any] | None,
    ) -> Call[SessionBegun]:
        document = {
            "session": session or _fresh("rec"),
            "mode": "record",
            "append": append or None,
            "port": port,
            "upstream": upstream,
            "verify": verify,
            "caBundle": ca_bundle,
            "connectTimeout": connect_timeout,
            "readTimeout": read_timeout,
            "record": record,
        }
        begin = _Calls.begin(scenario, document)
        return dataclasses.replace(begin, before=(_Calls.create_scenario_if_missing(scenario),))

    @staticmethod
    def begin_playback(scenario: str, session: str | None, port: int | None) -> Call[SessionBegun]:
        document = {"session": session or _fresh("play"), "mode": "playback", "port": port}
        return _Calls.begin(scenario, document)

    @staticmethod
    def end_session(scenario: str, session: str) -> Call[None]:
        body = _encoded({"end": None, "session": session}, SessionAction)
        return Call("POST", f"{SCENARIOS}/objects/{_segment(scenario)}/action", _nothing, body=body)

    # archives

    @staticmethod
    def upload(archive: str | Path | bytes, filename: str) -> Call[ArchiveImported]:
        if not isinstance(archive, bytes):
            filename, archive = Path(archive).name, Path(archive).read_bytes()
        files = {"files": (filename, archive, "application/zip")}
        return Call(
            "POST", f"{SCENARIOS}/upload", lambda r: _decoded(r, ArchiveImported), files=files
        )

    @staticmethod
    def export(scenario: str, as_scenario: str | None, as_session: str | None) -> Call[bytes]:
        query = ExportQuery(scenario=as_scenario or UNSET, session=as_session or UNSET)
        path = f"{SCENARIOS}/objects/{_segment(scenario)}/export"
        return Call("GET", path, lambda r: r.content, params=_args(query))

    @staticmethod
    def import_har(
        scenario: str,
        har: str | Path | Mapping[str, Any],
        record: RecordRules | Mapping[str, Any] | None,
    ) -> Call[HarImported]:
        document: Any = (
            har if isinstance(har, Mapping) else msgspec.json.decode(Path(har).read_bytes())
        )
        if record is not None and isinstance(document, Mapping):
            document = {**document, "record": msgspec.to_builtins(record)}
        # Checked against the model, but sent as given: the HAR spec's ``_`` keys, which the
        # server lets through, are not the model's and would be dropped by converting.
        _encoded(document, HarImport)
        return Call(
            "POST",
            f"{SCENARIOS}/objects/{_segment(scenario)}/har",
            lambda r: _data(r, HarImported),
            body=msgspec.json.encode(document),
        )

    # delay policies

    @staticmethod
    def put_delay_policy(document: Document) -> Call[DelayPolicyPut]:
        body = _encoded(document, DelayPolicyDocument)
        return Call("PUT", DELAY_POLICIES, lambda r: _decoded(r, DelayPolicyReply).data, body=body)

    @staticmethod
    def delay_policies() -> Call[list[DelayPolicyView]]:
        return Call("GET", f"{DELAY_POLICIES}/detail", lambda r: _data(r, list[DelayPolicyView]))

    @staticmethod
    def delete_delay_policy(name: str) -> Call[None]:
        return Call("DELETE", f"{DELAY_POLICIES}/objects/{_segment(name)}", _nothing)

    # tracker

    @staticmethod
    def tracker_page(q: str, skip: int, size: int) -> Call[_TrackedPage]:
        query = TrackerQuery(skip=str(skip), limit=str(size), q=q)

        def read(reply: httpx.Response) -> _TrackedPage:
            page = _decoded(reply, TrackerPage)
            more = page.paging.next is not None
            return _TrackedPage(
                page.data, _Calls.tracker_page(q, skip + size, size) if more else None
            )

        return Call("GET", TRACKER, read, params=_args(query))

    @staticmethod
    def tracker_record(record_id: str | int) -> Call[dict[str, Any]]:
        path = f"{TRACKER}/objects/{_segment(str(record_id))}"
        return Call("GET", path, lambda r: _decoded(r, TrackerRecord).data)

    # operations

    @staticmethod
    def reset(side: Literal["virtual", "cloud"] | None) -> Call[ResetDone]:
        path = RESET + (f"/{side}" if side else "")
        return Call("POST", path, lambda r: _data(r, ResetDone))

    @staticmethod
    def health() -> Call[Health]:
        # 503 is an answer: the server is up, its store is not (``store.error`` says why).
        return Call("GET", HEALTH, lambda r: _decoded(r, Health), answers=frozenset({503}))

    @staticmethod
    def openapi() -> Call[dict[str, Any]]:
        return Call("GET", OPENAPI, lambda r: _decoded(r, dict[str, Any]))

    # the cloud's control plane

    @staticmethod
    def tick(seconds: float) -> Call[Ticked]:
        body = _encoded({"amount": seconds}, Tick)
        return Call("POST", TICK, lambda r: _decoded(r, Ticked), body=body)

    @staticmethod
    def presets() -> Call[dict[str, Any]]:
        return Call("GET", PRESETS, lambda r: _decoded(r, dict[str, Any]))

    @staticmethod
    def add_behavior(
        event: BehaviorEvent,
        name: str,
        criteria: list[Mapping[str, Any]] | None,
        parameters: Mapping[str, Any] | None,
    ) -> Call[str]:
        document = _object({"name": name, "criteria": criteria, "parameters": parameters})
        body = _encoded(document, BehaviorDocument)
        return Call("POST", event.path, lambda r: _decoded(r, BehaviorCreated).id, body=body)

    @staticmethod
    def behaviors(event: BehaviorEvent) -> Call[list[dict[str, Any]]]:
        return Call("GET", event.path, lambda r: _decoded(r, Behaviors).behaviors)

    @staticmethod
    def remove_behavior(event: BehaviorEvent, behavior_id: str, missing_ok: bool) -> Call[None]:
        # missing_ok: a block's end, after a reset in it removed every behavior already.
        answers = frozenset({404}) if missing_ok else frozenset()
        path = f"{event.path}/{_segment(behavior_id)}"
        return Call("DELETE", path, _nothing, answers=answers)


# Sessions --------------------------------------------------------------------------------


class _Client:
    """What both clients are, before their transport: where the server is."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")


class _BegunSession:
    """A begun session, whichever client began it: its names and where it answers."""

    def __init__(self, sim: _Client, scenario: str, begun: SessionBegun) -> None:
        self.scenario = scenario
        self.name = begun.session
        self.port: int | None = begun.port if isinstance(begun.port, int) else None
        self.upstream: str | None = begun.upstream if isinstance(begun.upstream, str) else None
        self.ended = False
        self._base_url = sim.base_url

    @property
    def url(self) -> str:
        """Where an application reaches it: its own port, else the ``/virtual/`` prefix."""
        if self.port is not None:
            return f"http://{httpx.URL(self._base_url).host}:{self.port}"
        return f"{self._base_url}/virtual/{self.scenario}/{self.name}"


class Session(_BegunSession):
    """A session begun by ``Simulacra``: ended when its ``with`` block ends (or by ``end``)."""

    def __init__(self, sim: Simulacra, scenario: str, begun: SessionBegun) -> None:
        super().__init__(sim, scenario, begun)
        self.sim = sim

    def end(self) -> None:
        if not self.ended:
            self.sim._send(_Calls.end_session(self.scenario, self.name))
            self.ended = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end()


class Recording(Session):
    """A session in record mode: ``stub`` adds a stub (the same request again extends its
    sequence); with an upstream, every request at ``url`` is forwarded and recorded."""

    def stub(
        self,
        request: Mapping[str, Any],
        response: Mapping[str, Any] | list[Mapping[str, Any]],
        priority: int | None = None,
    ) -> str:
        """Add a stub: ``request`` matchers, ``response`` (a list: a sequence of them).
        Returns the stub's id."""
        call = _Calls.put_stub(self.scenario, self.name, request, response, priority)
        return self.sim._send(call)


class AsyncSession(_BegunSession):
    """A session begun by ``AsyncSimulacra``: ended when its ``async with`` block ends (or
    by ``await end()``)."""

    def __init__(self, sim: AsyncSimulacra, scenario: str, begun: SessionBegun) -> None:
        super().__init__(sim, scenario, begun)
        self.sim = sim

    async def end(self) -> None:
        if not self.ended:
            await self.sim._send(_Calls.end_session(self.scenario, self.name))
            self.ended = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.end()


class AsyncRecording(AsyncSession):
    """``Recording``'s async twin."""

    async def stub(
        self,
        request: Mapping[str, Any],
        response: Mapping[str, Any] | list[Mapping[str, Any]],
        priority: int | None = None,
    ) -> str:
        call = _Calls.put_stub(self.scenario, self.name, request, response, priority)
        return await self.sim._send(call)


S = TypeVar("S", bound=AsyncSession)


class Beginning(Generic[S]):
    """A session ``AsyncSimulacra`` is about to begin: ``await`` it for the session, or
    enter it (``async with``) to end the session when the block ends."""

    def __init__(self, begin: Callable[[], Awaitable[S]]) -> None:
        self._begin = begin
        self._session: S | None = None

    def __await__(self) -> Generator[Any, None, S]:
        return self._begin().__await__()

    async def __aenter__(self) -> S:
        self._session = await self._begin()
        return self._session

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.end()


# The clients -----------------------------------------------------------------------------


class Simulacra(_Client):
    """A client of one Simulacra server (``base_url``: its main port)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        super().__init__(base_url)
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Simulacra:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        for step in call.before:
            self._send(step)
        return call.outcome(self.http.request(call.method, call.path, **call.arguments()))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any request (``kwargs``: httpx's): its ``data`` (v2 envelope), its JSON or its
        bytes; SimulacraError on a 4xx/5xx."""
        return self._send(_Calls.raw(method, path, kwargs))

    def action(self, scenario: str, document: Document) -> dict[str, Any]:
        """A session action (``SessionAction``: begin, end, end all, export link)."""
        return self._send(_Calls.action(scenario, document))

    # scenarios

    def create_scenario(self, name: str) -> ScenarioRef:
        return self._send(_Calls.create_scenario(name))

    def scenarios(self) -> list[ScenarioDetail]:
        """Each scenario with its stub count and sessions (names are ``host:name``)."""
        return self._send(_Calls.scenarios())

    def delete_scenario(self, name: str) -> None:
        """Delete it with its stubs, ending its sessions."""
        self._send(_Calls.delete_scenario(name))

    def stubs(self, scenario: str) -> list[dict[str, Any]]:
        """The scenario's stub documents."""
        return self._send(_Calls.stubs(scenario))

    def import_stubs(
        self,
        scenario: str,
        stubs: Iterable[Mapping[str, Any]],
        session: str | None = None,
    ) -> StubsImported:
        """Add many stubs at once, all or nothing (into ``session`` while it records, or
        straight into the scenario); the same matchers again extend a stub's sequence."""
        return self._send(_Calls.import_stubs(scenario, stubs, session))

    # sessions

    def recording(
        self,
        scenario: str,
        session: str | None = None,
        *,
        upstream: str | None = None,
        port: int | None = None,
        append: bool = False,
        verify: bool | None = None,
        ca_bundle: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        record: RecordRules | Mapping[str, Any] | None = None,
    ) -> Recording:
        """Begin recording ``scenario`` (created when missing) in ``session`` (default: a
        fresh name). ``upstream``: forward every request at the session's ``url`` there and
        record it (``verify``, ``ca_bundle``, the timeouts in seconds, and the ``record``
        rules: what is kept). ``port`` (0: any free one): a port of its own."""
        call = _Calls.begin_recording(
            scenario,
            session,
            upstream=upstream,
            port=port,
            append=append,
            verify=verify,
            ca_bundle=ca_bundle,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            record=record,
        )
        return Recording(self, scenario, self._send(call))

    def playing(
        self, scenario: str, session: str | None = None, *, port: int | None = None
    ) -> Session:
        """Begin playing ``scenario``; ``port`` (0: any free one) serves it on a port of its
        own, else it is at ``/virtual/{scenario}/{session}/`` (``Session.url`` says which)."""
        return Session(self, scenario, self._send(_Calls.begin_playback(scenario, session, port)))

    # archives

    def upload(
        self, archive: str | Path | bytes, filename: str = "scenario.zip"
    ) -> ArchiveImported:
        """Upload a scenario archive (an export zip, a path or its bytes): its scenario,
        created and begun in playback."""
        return self._send(_Calls.upload(archive, filename))

    def export(
        self, scenario: str, *, as_scenario: str | None = None, as_session: str | None = None
    ) -> bytes:
        """The scenario as a zip that ``upload`` (here or elsewhere) plays; ``as_scenario``
        and ``as_session``: the names written in it (default: its name, a dated session)."""
        return self._send(_Calls.export(scenario, as_scenario, as_session))

    def import_har(
        self,
        scenario: str,
        har: str | Path | Mapping[str, Any],
        record: RecordRules | Mapping[str, Any] | None = None,
    ) -> HarImported:
        """A browser's HAR file (a path or the parsed document) as the scenario's stubs."""
        return self._send(_Calls.import_har(scenario, har, record))

    # delay policies

    def delay_policy(self, document: DelayPolicyDocument | Mapping[str, Any]) -> DelayPolicyPut:
        """Create or replace a delay policy (``{"name", "delay_type", ...}``)."""
        return self._send(_Calls.put_delay_policy(document))

    def delay_policies(self) -> list[DelayPolicyView]:
        return self._send(_Calls.delay_policies())

    def delete_delay_policy(self, name: str) -> None:
        self._send(_Calls.delete_delay_policy(name))

    # tracker

    def tracked(self, q: str = "", page: int = 100) -> Iterator[dict[str, Any]]:
        """The tracker's records matching ``q``, newest first, fetched ``page`` at a time."""
        call: Call[_TrackedPage] | None = _Calls.tracker_page(q, 0, page)
        while call is not None:
            found = self._send(call)
            yield from found.records
            call = found.following

    def tracker_record(self, record_id: str | int) -> dict[str, Any]:
        """One tracked call in full: the request and the response."""
        return self._send(_Calls.tracker_record(record_id))

    # operations

    def reset(self, side: Literal["virtual", "cloud"] | None = None) -> ResetDone:
        """Forget everything (``side``: ``"virtual"`` or ``"cloud"`` for one side only)."""
        return self._send(_Calls.reset(side))

    def health(self) -> Health:
        """The server's health (``status`` "degraded": the store does not answer)."""
        return self._send(_Calls.health())

    def openapi(self) -> dict[str, Any]:
        """The admin API's OpenAPI document."""
        return self._send(_Calls.openapi())

    # the cloud's control plane

    def tick(self, seconds: float) -> str:
        """Move the cloud mocks' virtual clock on; the new time (ISO 8601)."""
        return self._send(_Calls.tick(seconds)).now

    def advance_clock(self, seconds: float) -> Ticked:
        """``tick``, with how far the clock moved."""
        return self._send(_Calls.tick(seconds))

    def presets(self) -> dict[str, Any]:
        """The metadata presets and magic values each cloud mock understands."""
        return self._send(_Calls.presets())

    def add_behavior(
        self,
        event: BehaviorEvent,
        name: str,
        *,
        criteria: list[Mapping[str, Any]] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> str:
        """Register a behavior for ``event`` (``name``, e.g. "fail", its ``parameters``),
        for the events matching every criterion (``[{"username": "bad-.*"}]``); its id."""
        return self._send(_Calls.add_behavior(event, name, criteria, parameters))

    def behaviors(self, event: BehaviorEvent) -> list[dict[str, Any]]:
        """The behaviors registered for ``event``, first match first."""
        return self._send(_Calls.behaviors(event))

    def remove_behavior(self, event: BehaviorEvent, behavior_id: str) -> None:
        self._send(_Calls.remove_behavior(event, behavior_id, missing_ok=False))

    @contextlib.contextmanager
    def behavior(
        self,
        event: BehaviorEvent,
        name: str,
        *,
        criteria: list[Mapping[str, Any]] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Iterator[str]:
        """``add_behavior`` for a ``with`` block (its id), removed when the block ends."""
        behavior_id = self.add_behavior(event, name, criteria=criteria, parameters=parameters)
        try:
            yield behavior_id
        finally:
            self._send(_Calls.remove_behavior(event, behavior_id, missing_ok=True))


class AsyncSimulacra(_Client):
    """``Simulacra``'s async twin: the same methods, awaited; ``recording`` and ``playing``
    are awaited or entered (``async with``), ``tracked`` is iterated (``async for``), and
    ``behavior`` is entered (``async with``)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        super().__init__(base_url)
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, trust_env=False)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncSimulacra:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        for step in call.before:
            await self._send(step)
        return call.outcome(await self.http.request(call.method, call.path, **call.arguments()))

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self._send(_Calls.raw(method, path, kwargs))

    async def action(self, scenario: str, document: Document) -> dict[str, Any]:
        return await self._send(_Calls.action(scenario, document))

    # scenarios

    async def create_scenario(self, name: str) -> ScenarioRef:
        return await self._send(_Calls.create_scenario(name))

    async def scenarios(self) -> list[ScenarioDetail]:
        return await self._send(_Calls.scenarios())

    async def delete_scenario(self, name: str) -> None:
        await self._send(_Calls.delete_scenario(name))

    async def stubs(self, scenario: str) -> list[dict[str, Any]]:
        return await self._send(_Calls.stubs(scenario))

    async def import_stubs(
        self,
        scenario: str,
        stubs: Iterable[Mapping[str, Any]],
        session: str | None = None,
    ) -> StubsImported:
        return await self._send(_Calls.import_stubs(scenario, stubs, session))

    # sessions

    def recording(
        self,
        scenario: str,
        session: str | None = None,
        *,
        upstream: str | None = None,
        port: int | None = None,
        append: bool = False,
        verify: bool | None = None,
        ca_bundle: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        record: RecordRules | Mapping[str, Any] | None = None,
    ) -> Beginning[AsyncRecording]:
        call = _Calls.begin_recording(
            scenario,
            session,
            upstream=upstream,
            port=port,
            append=append,
            verify=verify,
            ca_bundle=ca_bundle,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            record=record,
        )

        async def begin() -> AsyncRecording:
            return AsyncRecording(self, scenario, await self._send(call))

        return Beginning(begin)

    def playing(
        self, scenario: str, session: str | None = None, *, port: int | None = None
    ) -> Beginning[AsyncSession]:
        call = _Calls.begin_playback(scenario, session, port)

        async def begin() -> AsyncSession:
            return AsyncSession(self, scenario, await self._send(call))

        return Beginning(begin)

    # archives

    async def upload(
        self, archive: str | Path | bytes, filename: str = "scenario.zip"
    ) -> ArchiveImported:
        return await self._send(_Calls.upload(archive, filename))

    async def export(
        self, scenario: str, *, as_scenario: str | None = None, as_session: str | None = None
    ) -> bytes:
        return await self._send(_Calls.export(scenario, as_scenario, as_session))

    async def import_har(
        self,
        scenario: str,
        har: str | Path | Mapping[str, Any],
        record: RecordRules | Mapping[str, Any] | None = None,
    ) -> HarImported:
        return await self._send(_Calls.import_har(scenario, har, record))

    # delay policies

    async def delay_policy(
        self, document: DelayPolicyDocument | Mapping[str, Any]
    ) -> DelayPolicyPut:
        return await self._send(_Calls.put_delay_policy(document))

    async def delay_policies(self) -> list[DelayPolicyView]:
        return await self._send(_Calls.delay_policies())

    async def delete_delay_policy(self, name: str) -> None:
        await self._send(_Calls.delete_delay_policy(name))

    # tracker

    async def tracked(self, q: str = "", page: int = 100) -> AsyncIterator[dict[str, Any]]:
        call: Call[_TrackedPage] | None = _Calls.tracker_page(q, 0, page)
        while call is not None:
            found = await self._send(call)
            for record in found.records:
                yield record
            call = found.following

    async def tracker_record(self, record_id: str | int) -> dict[str, Any]:
        return await self._send(_Calls.tracker_record(record_id))

    # operations

    async def reset(self, side: Literal["virtual", "cloud"] | None = None) -> ResetDone:
        return await self._send(_Calls.reset(side))

    async def health(self) -> Health:
        return await self._send(_Calls.health())

    async def openapi(self) -> dict[str, Any]:
        return await self._send(_Calls.openapi())

    # the cloud's control plane

    async def tick(self, seconds: float) -> str:
        return (await self._send(_Calls.tick(seconds))).now

    async def advance_clock(self, seconds: float) -> Ticked:
        return await self._send(_Calls.tick(seconds))

    async def presets(self) -> dict[str, Any]:
        return await self._send(_Calls.presets())

    async def add_behavior(
        self,
        event: BehaviorEvent,
        name: str,
        *,
        criteria: list[Mapping[str, Any]] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> str:
        return await self._send(_Calls.add_behavior(event, name, criteria, parameters))

    async def behaviors(self, event: BehaviorEvent) -> list[dict[str, Any]]:
        return await self._send(_Calls.behaviors(event))

    async def remove_behavior(self, event: BehaviorEvent, behavior_id: str) -> None:
        await self._send(_Calls.remove_behavior(event, behavior_id, missing_ok=False))

    @contextlib.asynccontextmanager
    async def behavior(
        self,
        event: BehaviorEvent,
        name: str,
        *,
        criteria: list[Mapping[str, Any]] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        behavior_id = await self.add_behavior(event, name, criteria=criteria, parameters=parameters)
        try:
            yield behavior_id
        finally:
            await self._send(_Calls.remove_behavior(event, behavior_id, missing_ok=True))
