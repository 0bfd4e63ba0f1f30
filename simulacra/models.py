"""The admin API's shapes: what its handlers convert their input to, and what they answer.

One set of msgspec types serves three readers: the handlers, which convert each body, query
string and header set to its type before anything else reads it (``simulacra/web.py``,
``operation``); the OpenAPI document (``simulacra/openapi.py``), generated from them; and
the Python client (``simulacra/client.py``), which builds its requests from them. A key the
types do not name is refused, with the same message everywhere (``Invalid``, a 400 in the
API's envelope): a typo never passes unseen. The exceptions are named where they are: a
query string (caches and proxies add keys) and a HAR file (its spec allows ``_``-keys).

msgspec rather than pydantic: bench/models.py converts the same stub documents with both
(msgspec: a quarter of the CPU from parsed JSON, 0.75 against 2.9 us; 21 against 37 ms to
import). Playback converts nothing here, so the choice cannot slow it.

Pure: msgspec only. Domain code takes the converted values, or their plain form
(``plain``), never a request.
"""

from __future__ import annotations

import functools
import re
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

from simulacra.errors import Invalid

T = TypeVar("T")


class Body(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A JSON body: its unknown keys are refused."""


class Args(Struct, omit_defaults=True):
    """A query string or header set: unknown keys are let through (caches, proxies and
    clients add their own)."""


def convert(value: object, model: type[T], where: str = "request body", strict: bool = True) -> T:
    """``value`` (plain JSON values, or strings when ``strict`` is off) as ``model``;
    ``Invalid`` (400) saying what is wrong and where (an unknown key: which keys are known)."""
    try:
        return msgspec.convert(value, model, strict=strict)
    except msgspec.ValidationError as exc:
        raise Invalid(f"{where} is invalid: {readable(str(exc), model)}") from None


def readable(message: str, model: object = None) -> str:
    """msgspec's message in the domain's words: "unknown key 'x' in a.b; known: ...",
    "'x' is missing", "expected 'str', got 'int' at a"; a long key or value is cut short
    (a 100 KB key must not come back in full)."""
    text, _, path = message.partition(" - at `$")
    path = path.rstrip("`").lstrip(".")
    text = _QUOTED.sub(_short, text)
    if (unknown := _UNKNOWN.match(text)) is not None:
        known = _struct_at(model, path)
        where = f" in {path}" if path else ""
        listed = f"; known: {', '.join(keys(known))}" if known is not None else ""
        return f"unknown key '{unknown[1]}'{where}{listed}"
    if (missing := _MISSING.match(text)) is not None:
        return f"'{missing[1]}' is missing" + (f" in {path}" if path else "")
    text = text[:1].lower() + text[1:].replace("`", "'")
    if not path and text.startswith("expected 'object'"):
        return "a JSON object is expected" + text.removeprefix("expected 'object'")
    return f"{text} at {path}" if path else text


_QUOTED = re.compile(r"`([^`]*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`$")
_MISSING = re.compile(r"Object missing required field `(.*)`$")
MAX_QUOTED = 60


def _short(match: re.Match[str]) -> str:
    quoted = match[1]
    return f"`{quoted[:MAX_QUOTED]}...`" if len(quoted) > MAX_QUOTED else match[0]


def _struct_at(model: object, path: str) -> type[Struct] | None:
    """The Struct type found at ``path`` (``.a[0].b``) of ``model``, if one is there."""
    for step in filter(None, path.replace("[", ".[").split(".")):
        model = _struct_in(model)
        if step.startswith("["):
            args = [a for a in get_args(model) if a is not UnsetType]
            model = args[0] if args else None
            continue
        if not (isinstance(model, type) and issubclass(model, Struct)):
            return None
        by_name = {f.encode_name: f.type for f in msgspec.structs.fields(model)}
        model = by_name.get(step)
    found = _struct_in(model)
    return found if isinstance(found, type) and issubclass(found, Struct) else None


def _struct_in(model: object) -> object:
    """``X`` of ``X | None | UnsetType`` (or ``Annotated[X, ...]``); else ``model``."""
    while get_origin(model) is Annotated:
        model = get_args(model)[0]
    if isinstance(model, UnionType) or get_origin(model) is Union:
        for arg in get_args(model):
            if isinstance(arg, type) and issubclass(arg, Struct):
                return arg
            if get_origin(arg) is list:
                return arg
    return model


def plain(value: Struct) -> dict[str, Any]:
    """A converted body as the plain JSON object the domain's parsers read (keys not given
    stay absent). Only the types' own objects are rebuilt: the values under them are the
    parsed JSON already, nested as deep as the parser allows (no recursion through them)."""
    out: dict[str, Any] = {}
    for name, key in _names(type(value)):
        item = getattr(value, name)
        if item is UNSET:
            continue
        if isinstance(item, Struct):
            item = plain(item)
        elif isinstance(item, list) and item and isinstance(item[0], Struct):
            item = [plain(element) for element in item]
        out[key] = item
    return out


@functools.cache
def _names(model: type[Struct]) -> tuple[tuple[str, str], ...]:
    """(attribute, JSON key) of each field; once per type (msgspec's ``fields`` evaluates
    the annotations on every call: 0.45 ms for a stub)."""
    return tuple((f.name, f.encode_name) for f in msgspec.structs.fields(model))


def keys(model: type[Struct]) -> tuple[str, ...]:
    """The JSON keys of ``model``, in order: the domain's list of known keys."""
    return tuple(key for _, key in _names(model))


# Descriptions shared by several fields.
NAME = Annotated[str, Meta(description="Letters, digits, '_' and '-' (Mirage's names).")]
SCENARIO_NAME = Annotated[
    str,
    Meta(description="A scenario of this Host's namespace, or ``host:name`` for another's."),
]
FLAG = Annotated[str, Meta(description="true/1/yes/on, anything else is false.")]


# Mirage API v2: scenarios and sessions -------------------------------------------------


class ScenarioCreate(Body):
    """``PUT /api/v2/scenarios``."""

    scenario: SCENARIO_NAME


class ScenarioRef(Struct):
    name: Annotated[str, Meta(description="``host:name``")]
    scenarioRef: str


class SessionSummary(Struct, omit_defaults=True):
    name: str
    status: Annotated[str, Meta(description="record, playback or dormant")]
    loaded: str
    last_used: str
    port: int | UnsetType = UNSET
    upstream: str | UnsetType = UNSET


class ScenarioDetail(Struct, omit_defaults=True):
    name: str
    stub_count: int
    recorded: str
    space_used_kb: int
    sessions: list[SessionSummary]
    scenarioRef: str
    stubs: int | UnsetType = UNSET  # one scenario's view only (Mirage's docs name it so)


class RecordRules(Body):
    """What a recording session keeps of each exchange with its upstream."""

    ignoreQuery: list[str] | UnsetType | None = UNSET
    matchHeaders: list[str] | UnsetType | None = UNSET
    redactHeaders: list[str] | UnsetType | None = UNSET
    keepSetCookie: bool | UnsetType = UNSET
    recordFailures: bool | UnsetType = UNSET


PORT = Annotated[int, Meta(ge=0, le=65535, description="0: any free port")]
UPSTREAM = Annotated[str, Meta(description="forward and record: the upstream's base URL")]
SECONDS = Annotated[float, Meta(gt=0, le=600)]


class SessionAction(Body):
    """``POST /api/v2/scenarios/objects/{name}/action``: one of ``{"begin": null, ...}``,
    ``{"end": null, "session"}``, ``{"end": "sessions"}`` or ``{"export": null}``."""

    begin: Any = UNSET
    end: Annotated[str | None, Meta(description='null, or "sessions" for all')] | UnsetType = UNSET
    export: Any = UNSET
    session: str | UnsetType | None = UNSET
    mode: Annotated[str, Meta(description="record or playback")] | UnsetType | None = UNSET
    append: bool | UnsetType = UNSET
    port: PORT | UnsetType | None = UNSET
    upstream: UPSTREAM | UnsetType | None = UNSET
    verify: bool | UnsetType = UNSET
    caBundle: str | UnsetType | None = UNSET
    connectTimeout: SECONDS | UnsetType = UNSET
    readTimeout: SECONDS | UnsetType = UNSET
    record: RecordRules | UnsetType | None = UNSET
    runnable: str | bool | UnsetType | None = UNSET
    # Mirage's export options: nothing is written on the server's disk, so no directory.
    export_dir: Annotated[Any, Meta(description="ignored: nothing is written on disk")] = UNSET
    playback_session: Annotated[Any, Meta(description="for runnable exports (refused)")] = UNSET


class ScenarioQuery(Args):
    all_hosts: str = field(default="true", name="all-hosts")


class ForceArgs(Args):
    force: FLAG | UnsetType = UNSET


class ScenarioHeaders(Args):
    """Headers of the routes naming a scenario."""

    target_host: Annotated[str, Meta(description="the namespace, for the Host's")] | (
        UnsetType
    ) = UNSET
    force: FLAG | UnsetType = UNSET


# Stubs -------------------------------------------------------------------------------


class Dribble(Body):
    """WireMock's chunkedDribbleDelay: the body in this many chunks over this many ms."""

    numberOfChunks: int
    totalDuration: int


FAULT = Annotated[
    str,
    Meta(
        description="CONNECTION_RESET_BY_PEER, EMPTY_RESPONSE, MALFORMED_RESPONSE_CHUNK or"
        " RANDOM_DATA_THEN_CLOSE"
    ),
]
STATUS = Annotated[int, Meta(ge=100, le=599)] | Annotated[str, Meta(description="as text")]


class StubResponse(Body):
    """One response of a stub; a list ``body`` is a sequence of responses."""

    status: STATUS | UnsetType | None = UNSET
    body: Annotated[Any, Meta(description="text, a JSON value, or a list: a sequence")] = UNSET
    base64Body: str | UnsetType = UNSET
    headers: dict[str, str | list[str] | int | float | bool] | UnsetType | None = UNSET
    delayPolicy: str | UnsetType | None = UNSET
    fault: FAULT | UnsetType | None = UNSET
    chunkedDribbleDelay: Dribble | UnsetType | None = UNSET


# The matchers themselves are the matching module's: openapi.py lists them in the document.
MATCHERS = Annotated[dict[str, Any], Meta(description="Request matchers")]


class StubDocument(Body):
    """A stub: request matchers, and a response or a sequence of them."""

    request: MATCHERS
    response: StubResponse | UnsetType = UNSET
    responses: list[StubResponse] | UnsetType = UNSET
    priority: int | str | UnsetType | None = UNSET
    args: dict[str, str | int | float | bool] | UnsetType | None = UNSET
    recorded: str | int | UnsetType | None = UNSET


class StubHeaders(Args):
    """``PUT .../stubs``: the recording session, and Mirage's stub options."""

    session: Annotated[str, Meta(description="the recording session (required)")] | (
        UnsetType
    ) = UNSET
    stubo_request_session: str | UnsetType = field(default=UNSET, name="stubo-request-session")
    target_host: str | UnsetType = UNSET
    priority: str | UnsetType = UNSET
    stateful: FLAG | UnsetType = UNSET
    delay_policy: str | UnsetType = UNSET
    stub_created_date: str | UnsetType = UNSET


class StubStored(Struct):
    message: str
    status: Annotated[str, Meta(description="created or updated")]
    key: str


# A body of JSON values one per line (a bulk import of stubs).
NDJSON = "application/x-ndjson"


class StubPage(Args):
    """``GET .../stubs``: one page of them (without both: all of them, streamed)."""

    offset: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=1, le=10_000)] | UnsetType = UNSET


class StubsImported(Struct):
    """A bulk import: how many stubs were created, extended (the same matchers again: a
    longer sequence), or ignored (not stateful, and the same responses)."""

    created: int
    updated: int
    ignored: int


class StubListed(Struct):
    id: str
    stub: dict[str, Any]
    matchers_hash: str
    space_used: int
    recorded: str
    scenario: str


# Delay policies, tracker, reset ---------------------------------------------------------


# Checked by the domain (virtual/delays.py), which answers a wrong value with Mirage's 409.
NUMBER = Annotated[Any, Meta(description="a number, or a numeric string")]


class DelayPolicyDocument(Body):
    """A delay policy: fixed (milliseconds), normalvariate (mean, stddev) or weighted
    (delays, ``type,params...,weight:...``)."""

    name: str
    delay_type: Annotated[str, Meta(description="fixed, normalvariate or weighted")] | (
        UnsetType
    ) = UNSET
    milliseconds: NUMBER = UNSET
    mean: NUMBER = UNSET
    stddev: NUMBER = UNSET
    delays: Annotated[Any, Meta(description="type,params...,weight:...")] = UNSET
    delayPolicyRef: Annotated[Any, Meta(description="ignored: a fetched policy's link")] = UNSET


class DelayPolicyPut(Struct):
    status: str
    message: str
    name: str
    delay_type: str
    delayPolicyRef: str


class DelayPolicyView(Struct, omit_defaults=True):
    name: str
    delay_type: str
    delayPolicyRef: str
    milliseconds: float | UnsetType = UNSET
    mean: float | UnsetType = UNSET
    stddev: float | UnsetType = UNSET
    delays: str | UnsetType = UNSET


class TrackerQuery(Args):
    skip: Annotated[str, Meta(description="records to skip (an integer)")] | UnsetType = UNSET
    limit: Annotated[str, Meta(description="page size (an integer)")] | UnsetType = UNSET
    q: Annotated[str, Meta(description="words, sc:, rt:, d:, session:, recorded:")] = ""
    all_hosts: str = field(default="true", name="all-hosts")


class DelayPolicyReply(Struct):
    version: str
    status_code: int
    data: DelayPolicyPut


class Paging(Struct):
    first: str
    previous: str | None
    next: str | None
    last: str
    currentLimit: int
    totalItems: int


class TrackerPage(Struct):
    data: list[dict[str, Any]]
    paging: Paging


class TrackerRecord(Struct):
    data: dict[str, Any]


class ResetDone(Struct):
    reset: list[str]


class Message(Struct):
    message: str


# Archives ------------------------------------------------------------------------------


class HarImport(Struct, omit_defaults=True):
    """A HAR 1.2 file, with the record rules to apply. Keys starting with ``_`` are the HAR
    spec's custom fields and are ignored; other unknown keys are refused."""

    log: dict[str, Any]
    record: RecordRules | UnsetType | None = UNSET


class ExportQuery(Args):
    scenario: str | UnsetType = UNSET
    session: str | UnsetType = UNSET


# Mirage API v1 ---------------------------------------------------------------------------


class V1Args(Args):
    """API v1's arguments, from the query string or a form body (the last value wins)."""

    scenario: str | UnsetType = UNSET
    session: str | UnsetType = UNSET
    mode: str | UnsetType = UNSET
    host: str | UnsetType = UNSET
    force: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    delay_type: str | UnsetType = UNSET


# Envelopes -----------------------------------------------------------------------------


class ErrorDetail(Struct, omit_defaults=True):
    code: int
    message: str
    nearMisses: list[dict[str, Any]] | UnsetType = UNSET


class ErrorEnvelope(Struct):
    """Mirage's error envelope (API v2 and v1): ``error.code`` is the HTTP status."""

    version: str
    error: ErrorDetail


class FlatError(Struct):
    """Mimic's control-plane error."""

    message: str
    code: int


# Mimic's control plane -------------------------------------------------------------------


class Tick(Body):
    amount: Annotated[float, Meta(ge=0, description="seconds")] | str


class Ticked(Struct):
    advanced: float
    now: Annotated[str, Meta(description="ISO 8601")]


class BehaviorDocument(Body):
    """A behavior: what happens (``name``, ``parameters``) when every criterion holds."""

    name: str
    parameters: dict[str, Any] | UnsetType | None = UNSET
    criteria: list[dict[str, Any]] | UnsetType = UNSET


class BehaviorCreated(Struct):
    id: str


class Behaviors(Struct):
    behaviors: list[dict[str, Any]]


# Operations ------------------------------------------------------------------------------


class StoreHealth(Struct, omit_defaults=True):
    reachable: bool
    kind: Annotated[str, Meta(description="memory, sqlite or postgresql")]
    error: str | UnsetType = UNSET


class Health(Struct):
    status: Annotated[str, Meta(description="ok, or degraded when the store does not answer")]
    version: str
    uptime_s: float
    store: StoreHealth


# The client's readings of answers the routes declare as plain objects --------------------
# (simulacra/client.py reads into these; the routes also answer other shapes, an action's
# end or export say, so their OpenAPI replies stay objects.)


class SessionBegun(Struct, omit_defaults=True):
    """``{"begin": null, ...}`` on the action route: the session begun."""

    message: str
    status: Annotated[str, Meta(description="record or playback")]
    scenario: str
    session: str
    scenarioRef: str
    port: int | UnsetType = UNSET
    upstream: str | UnsetType = UNSET


class ArchiveImported(Struct, omit_defaults=True):
    """One uploaded archive: its scenario as the YAML names it (``scenario``) and as stored
    (``name``), and the session begun in playback (``status`` says when none was)."""

    scenario: str
    session: str
    total: int
    name: str
    stub_count: int
    scenarioRef: str
    status: list[str] | UnsetType = UNSET


class HarImported(Struct):
    """A HAR import: entries read, entries that cannot be played, stubs created/updated."""

    scenario: str
    scenarioRef: str
    entries: int
    skipped: int
    stubs: dict[str, int]
