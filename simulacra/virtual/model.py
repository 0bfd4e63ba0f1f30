"""Plain values of the virtualization domain, and the rules that build them.

Nothing here touches HTTP or the store: the API edge parses JSON into these,
the store persists them, playback reads them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from simulacra.dataplane.request import FAULTS
from simulacra.errors import Invalid, shown
from simulacra.models import Dribble, StubResponse, keys

NAME_RE = re.compile(r"^[\w-]+$")
# An explicit ``host:`` prefix: a DNS name or IPv4 address, or a bracketed IPv6 address.
HOST_RE = re.compile(r"^(?:[\w.-]+|\[[0-9a-f:.]+\])$")

RECORD = "record"
PLAYBACK = "playback"
DORMANT = "dormant"
MODES = (RECORD, PLAYBACK)


def check_name(kind: str, name: object) -> str:
    """Mirage names are ``[\\w-]+``; anything else would break the host:name keys."""
    if not isinstance(name, str) or not name:
        raise Invalid(f"{kind} name is missing")
    if not NAME_RE.match(name):
        raise Invalid(
            f"{kind} name {shown(name)} is illegal: use letters, digits, '_' and '-' only"
        )
    return name


def normalize_host(host: str) -> str:
    """Host header minus port, lowercased (Mirage's namespace key)."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8900
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def qualify(name: object, host: str) -> str:
    """``name`` or ``host:name`` -> the full ``host:name`` key, validated."""
    if not isinstance(name, str) or not name:
        raise Invalid("scenario name is missing")
    if ":" in name:
        given_host, _, short = name.rpartition(":")
        if not given_host:
            raise Invalid(f"scenario name {shown(name)} has an empty host")
        if not HOST_RE.match(given_host.lower()):
            raise Invalid(f"scenario name {shown(name)} has an illegal host {shown(given_host)}")
        check_name("scenario", short)
        return f"{given_host.lower()}:{short}"
    check_name("scenario", name)
    return f"{host}:{name}"


@dataclass
class Scenario:
    name: str  # "host:name"
    created: str  # ISO timestamp
    version: int = 0  # bumped on every stub change; caches key on it

    @property
    def host(self) -> str:
        return self.name.rpartition(":")[0]

    @property
    def short_name(self) -> str:
        return self.name.rpartition(":")[2]


# The keys of a stub's response object (and of each ``responses`` item), in to_dict's order:
# the API's type's (simulacra/models.py), which the stores' documents are read with too.
RESPONSE_KEYS = keys(StubResponse)
# A header's value, or its values when it is sent more than once (Set-Cookie).
HeaderValue = str | list[str]
DRIBBLE_KEYS = keys(Dribble)
MAX_DRIBBLE_CHUNKS = 10_000
MAX_DRIBBLE_MS = 600_000  # ten minutes: longer is a hung test, not a slow server
MAX_BODY_DEPTH = 254  # the deepest JSON body orjson writes (a deeper one was a 500)
# RFC 9110 5.6.2: a field name is a token.
HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# Slots: a scenario may hold 100,000 stubs, and their responses (issue 18: memory per stub).
# Playback keeps weak references to responses (dataplane/playback.py).
@dataclass(slots=True, weakref_slot=True)
class Response:
    status: int = 200
    body: str = ""
    headers: dict[str, HeaderValue] = field(default_factory=dict)
    delay_policy: str | None = None
    # WireMock's faults: what the connection does instead of answering (one of FAULTS).
    fault: str | None = None
    # WireMock's chunkedDribbleDelay: the body sent in this many chunks over these ms.
    dribble: tuple[int, int] | None = None
    # The body is base64 of bytes (WireMock's ``base64Body``): sent decoded, never a template.
    binary: bool = False

    @property
    def payload(self) -> bytes:
        """The body as sent."""
        return base64.b64decode(self.body) if self.binary else self.body.encode()

    def to_dict(self) -> dict[str, Any]:
        """The response object of a stub document; ``from_dict`` reads it back."""
        out: dict[str, Any] = {"status": self.status}
        out["base64Body" if self.binary else "body"] = self.body
        if self.headers:
            out["headers"] = self.headers
        if self.delay_policy:
            out["delayPolicy"] = self.delay_policy
        if self.fault:
            out["fault"] = self.fault
        if self.dribble:
            chunks, total_ms = self.dribble
            out["chunkedDribbleDelay"] = {"numberOfChunks": chunks, "totalDuration": total_ms}
        return out

    @classmethod
    def from_dict(
        cls, doc: object, delay_policy: str | None = None, where: str = "response"
    ) -> Response:
        """One response object in the stub JSON shape (``to_dict``'s) -> a Response.

        The one place that reads that shape: stub documents (through ``parse_responses``,
        which expands a list body first) and the stores. Raises Invalid naming what is
        wrong, unknown keys included. ``delay_policy`` (a header's) loses to the object's
        own ``delayPolicy``; ``where`` names the object in messages.
        """
        if not isinstance(doc, dict):
            raise Invalid(f"stub '{where}' must be an object")
        refuse_unknown(doc, RESPONSE_KEYS, where)
        body = doc.get("body", "")
        if isinstance(body, list):
            raise Invalid(f"{where}.body must be a string or JSON value, not a list")
        binary = "base64Body" in doc
        if binary:
            if "body" in doc:
                raise Invalid(f"{where} has both body and base64Body: keep one")
            body = _base64_text(doc["base64Body"], f"{where}.base64Body")
        policy = doc.get("delayPolicy", delay_policy)
        if policy is not None and not isinstance(policy, str):
            raise Invalid(f"{where}.delayPolicy must be a string")
        fault = _parse_fault(doc.get("fault"), where)
        dribble = _parse_dribble(doc.get("chunkedDribbleDelay"), where)
        if fault is not None and dribble is not None:
            raise Invalid(
                f"{where} has both fault and chunkedDribbleDelay: a fault sends no body to"
                " dribble; keep one"
            )
        return cls(
            _parse_status(doc.get("status"), where),
            _body_text(body, f"{where}.body"),
            _parse_headers(doc.get("headers"), f"{where}.headers"),
            policy or None,
            fault,
            dribble,
            binary,
        )


@dataclass(slots=True)
class Stub:
    scenario: str
    request: dict[str, Any]
    responses: list[Response]
    priority: int | None = None
    args: dict[str, str] = field(default_factory=dict)
    recorded: str = ""
    id: str = ""
    seq: int = 0  # insertion order, assigned by the store

    @property
    def matchers_hash(self) -> str:
        return matchers_hash(self.request)

    def document(self) -> dict[str, Any]:
        """The stub as Mirage shows it: a list body when it holds a sequence."""
        first = self.responses[0]
        response = first.to_dict()
        if len(self.responses) > 1 and not first.binary:
            response["body"] = [r.body for r in self.responses]
        doc: dict[str, Any] = {
            "priority": self.priority,
            "request": self.request,
            "response": response,
            "args": self.args,
            "recorded": self.recorded,
        }
        if len(self.responses) > 1 and any(
            (r.status, r.headers, r.delay_policy, r.fault, r.dribble, r.binary)
            != (first.status, first.headers, first.delay_policy, first.fault, first.dribble, False)
            for r in self.responses
        ):
            # Mirage's list body cannot say that statuses (or faults) differ; we can.
            doc["responses"] = [r.to_dict() for r in self.responses]
        return doc

    @property
    def space_used(self) -> int:
        return len(orjson.dumps(self.document()))


SESSION_COLUMNS = "host, name, scenario, status, loaded, last_used, port, upstream"


@dataclass
class Session:
    host: str
    name: str
    scenario: str  # "host:name"
    status: str  # record | playback | dormant
    loaded: str | None = None  # date the current mode began
    last_used: str | None = None  # "YYYY-MM-DD HH:MM:SS"
    # The TCP port this session is bound to (every request on it plays this session), kept
    # by the store so the port is served again after a restart; None: not bound.
    port: int | None = None
    # A recording session's upstream and record rules (``recording.Recording.to_dict``):
    # each request it gets is forwarded there and stored as a stub. None: recorded by PUT.
    upstream: dict[str, Any] | None = None

    @property
    def records_upstream(self) -> bool:
        """It records now, by forwarding to an upstream (not by PUT)."""
        return self.status == RECORD and self.upstream is not None

    @property
    def serves_port(self) -> bool:
        """Its port is served: it plays, or records an upstream, there."""
        if self.port is None:
            return False
        return self.status == PLAYBACK or self.records_upstream

    def row(self) -> tuple[Any, ...]:
        """The session as the stores keep it (``STORED_COLUMNS``): the upstream as JSON."""
        upstream = None if self.upstream is None else orjson.dumps(self.upstream).decode()
        return (
            self.host,
            self.name,
            self.scenario,
            self.status,
            self.loaded,
            self.last_used,
            self.port,
            upstream,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Session:
        host, name, scenario, status, loaded, last_used, port, upstream = row
        stored = orjson.loads(upstream) if upstream else None
        return cls(host, name, scenario, status, loaded, last_used, port, stored)

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "loaded": self.loaded or "-",
            "last_used": self.last_used or "-",
        }
        if self.port is not None:  # only when bound: unbound sessions show as before
            summary["port"] = self.port
        if self.upstream is not None:
            summary["upstream"] = self.upstream["url"]
        return summary


def matchers_hash(request: dict[str, Any]) -> str:
    """Two stubs with equal matchers share this hash (and so a response sequence)."""
    return hashlib.md5(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _body_text(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, dict | list | int | float | bool):
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # deeper than orjson writes (254), or an int over 64 bits
            raise Invalid(
                f"{where} cannot be written as JSON: nest it at most {MAX_BODY_DEPTH} deep"
                " (or send it as a string)"
            ) from None
    raise Invalid(f"{where} must be a string or JSON value")


def parse_priority(value: object, where: str = "priority") -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid(f"{where} must be an integer")
    number = value
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise Invalid(f"{where} must be an integer, got {shown(value)}") from None
    if not isinstance(number, int):
        raise Invalid(f"{where} must be an integer, got {shown(value)}")
    if not -(2**63) <= number < 2**63:  # the store keeps a 64-bit integer
        raise Invalid(f"{where} is out of range, got {shown(value)}")
    return number


def _parse_status(value: object, where: str = "response") -> int:
    if value is None:
        return 200
    number = value
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits, three at most: int() refuses "²" (which isdigit() takes) and 5,000 digits
        number = int(text) if text.isascii() and text.isdigit() and len(text) <= 3 else None
    if isinstance(number, bool) or not isinstance(number, int) or not 100 <= number <= 599:
        raise Invalid(f"{where}.status must be an HTTP status code (100-599), got {shown(value)}")
    return number


def _parse_headers(value: object, where: str) -> dict[str, HeaderValue]:
    """Header names to a value, or to a list of values for a header sent more than once."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be an object of header names to values")
    out: dict[str, HeaderValue] = {}
    for k, v in value.items():
        if type(v) is str:  # the common case, and every stored stub's: nothing to check
            out[str(k)] = v
        elif isinstance(v, list) and v:
            out[str(k)] = [_header_text(item, where, k) for item in v]
        else:
            out[str(k)] = _header_text(v, where, k)
    return out


def _header_text(value: object, where: str, name: object) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise Invalid(f"{where}[{shown(name)}] must be a string (or a non-empty list of strings)")
    return str(value)


def header_lines(headers: dict[str, HeaderValue]) -> list[tuple[str, str]]:
    """(name, value) once per value, in order."""
    return [
        (name, item)
        for name, value in headers.items()
        for item in (value if isinstance(value, list) else (value,))
    ]


def _base64_text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{where} must be a base64 string")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{where} is not valid base64") from None
    return value


def check_playable(response: Response, where: str) -> None:
    """Refuse what cannot go on the wire as a final answer (checked when a stub is stored,
    not when a store loads one): a 1xx status (informational: the client waits on for the
    final answer that never comes), a header name that is not an RFC 9110 token, a value
    with CR, LF or NUL (a response splitter: ``"a\\r\\nSet-Cookie: x=1"``) or not latin-1."""
    if response.status < 200:
        raise Invalid(
            f"{where}.status {response.status} is informational (1xx), never a final answer:"
            " use 200-599"
        )
    where = f"{where}.headers"
    for name, value in header_lines(response.headers):
        if not HEADER_NAME_RE.fullmatch(name):
            raise Invalid(
                f"{where}: {shown(name)} is not a header name"
                " (letters, digits and !#$%&'*+-.^_`|~ only)"
            )
        if "\r" in value or "\n" in value or "\0" in value:
            raise Invalid(f"{where}[{shown(name)}] must not contain CR, LF or NUL")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise Invalid(
                f"{where}[{shown(name)}] must be latin-1 text (HTTP header values are bytes)"
            ) from None


def _parse_fault(value: object, where: str) -> str | None:
    if value is None:
        return None
    if value not in FAULTS:
        raise Invalid(f"{where}.fault must be one of {', '.join(FAULTS)}; got {shown(value)}")
    return str(value)


def _bounded_int(value: object, where: str, low: int, high: int) -> int:
    if value is None:
        raise Invalid(f"{where} is missing: give an integer from {low} to {high}")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{where} must be an integer from {low} to {high}, got {shown(value)}")
    return value


def refuse_unknown(value: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    """Invalid naming the keys of ``value`` not in ``known`` (a typo must not pass unseen)."""
    unknown = [k for k in value if k not in known]
    if unknown:
        names = ", ".join(shown(k, 40) for k in unknown[:5])
        plural = "s" if len(unknown) > 1 else ""
        raise Invalid(f"unknown {where} key{plural} {names}; known: {', '.join(known)}")


def _parse_dribble(value: object, where: str) -> tuple[int, int] | None:
    """``{"numberOfChunks": N, "totalDuration": ms}`` -> (N, ms), bounded."""
    if value is None:
        return None
    where = f"{where}.chunkedDribbleDelay"
    if not isinstance(value, dict):
        raise Invalid(f"{where} must be an object {{numberOfChunks, totalDuration}}")
    refuse_unknown(value, DRIBBLE_KEYS, where)
    chunks = _bounded_int(
        value.get("numberOfChunks"), f"{where}.numberOfChunks", 1, MAX_DRIBBLE_CHUNKS
    )
    total_ms = _bounded_int(
        value.get("totalDuration"), f"{where}.totalDuration (ms)", 0, MAX_DRIBBLE_MS
    )
    return chunks, total_ms


def parse_responses(
    doc: object, delay_policy: str | None = None, where: str = "response"
) -> list[Response]:
    """A stub's ``response`` object -> one Response per body (a list body is a sequence).

    Everything but the body (status, headers, delay policy, fault, dribble) applies to
    each element of a list body; ``Response.from_dict`` reads and checks it all.
    """
    if not isinstance(doc, dict):
        raise Invalid(f"stub '{where}' must be an object")
    body = doc.get("body", "")
    if not isinstance(body, list):
        response = Response.from_dict(doc, delay_policy, where)
        check_playable(response, where)
        return [response]
    if not body:
        raise Invalid(f"{where}.body must not be an empty list")
    shared = Response.from_dict({**doc, "body": ""}, delay_policy, where)
    check_playable(shared, where)
    return [
        replace(shared, body=_body_text(b, f"{where}.body[{i}]"), headers=dict(shared.headers))
        for i, b in enumerate(body)
    ]


def stub_from_document(
    doc: object,
    *,
    scenario: str,
    priority: object = None,
    args: dict[str, str] | None = None,
    delay_policy: str | None = None,
    recorded: str = "",
) -> Stub:
    """Validate a stub JSON document (Mirage's shape) into a Stub.

    ``priority`` and ``delay_policy`` come from headers and lose to the document's own.
    Matchers are validated by compiling them (see ``matching.compile_request``).
    """
    from simulacra.virtual.matching import compile_request
    from simulacra.virtual.templates import check_bodies

    if not isinstance(doc, dict):
        raise Invalid("a stub must be a JSON object with 'request' and 'response'")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise Invalid("stub 'request' must be an object of matchers")
    extra = doc.get("responses")
    if "response" not in doc and extra is None:
        raise Invalid("stub 'response' is missing")
    request = normalize_request(request)
    compile_request(request)  # raises Invalid on a bad matcher
    # A sequence of response objects (``responses``) may stand alone, in place of ``response``.
    responses = parse_responses(doc["response"], delay_policy) if "response" in doc else []
    if extra is not None:
        if not isinstance(extra, list) or not extra:
            raise Invalid("stub 'responses' must be a non-empty list of response objects")
        responses = [
            r
            for i, item in enumerate(extra)
            for r in parse_responses(item, delay_policy, f"responses[{i}]")
        ]
    # A template body that cannot compile is refused now, not at every playback.
    check_bodies(r.body for r in responses if not r.binary)
    stub_priority = parse_priority(doc.get("priority"))
    if stub_priority is None:
        stub_priority = parse_priority(priority, "priority header")
    stub_args = doc.get("args")
    if stub_args is None:
        stub_args = {}
    if not isinstance(stub_args, dict):
        raise Invalid("stub 'args' must be an object")
    merged_args = {str(k): _scalar_text(v, f"stub args[{shown(k)}]") for k, v in stub_args.items()}
    merged_args.update(args or {})
    return Stub(
        scenario=scenario,
        request=request,
        responses=responses,
        priority=stub_priority,
        args=merged_args,
        recorded=_scalar_text(doc.get("recorded") or recorded, "stub 'recorded'"),
    )


def _scalar_text(value: object, where: str) -> str:
    """A string, number or boolean as text; an object or list is refused (its ``str`` was a
    Python repr, and one nested 1,000 deep a RecursionError)."""
    if isinstance(value, dict | list):
        raise Invalid(f"{where} must be a string, got {shown(value)}")
    return str(value)


def normalize_request(request: dict[str, Any]) -> dict[str, Any]:
    """Mirage's legacy list form ``bodyPatterns: [{contains: [...]}, ...]`` -> one object.

    Mirage kept only the first element; we merge them all, so no matcher is dropped.
    """
    out = dict(request)
    patterns = out.get("bodyPatterns")
    if isinstance(patterns, list):
        merged: dict[str, Any] = {}
        for item in patterns:
            if not isinstance(item, dict):
                raise Invalid("request.bodyPatterns list items must be objects")
            for k, v in item.items():
                if k == "namespaces":
                    if not isinstance(v, dict):
                        raise Invalid("bodyPatterns.namespaces must map prefixes to namespace URIs")
                    merged.setdefault(k, {}).update(v)
                else:
                    merged.setdefault(k, []).extend(v if isinstance(v, list) else [v])
        out["bodyPatterns"] = merged
    return out
