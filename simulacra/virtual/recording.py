"""What recording a real upstream means, as plain values: a recording session's settings, one
exchange (a request and the answer it got), and the stub document that exchange becomes.

Pure: the recording proxy (``dataplane/proxy.py``) and HAR import both build ``Exchange``
values and store ``stub_document``'s result as a PUT would; nothing here does I/O.

The rules, for both:
- matchers from the method, the path and the query (less ``ignoreQuery``), the headers the
  session names (``matchHeaders``), the target host for a forward proxy, and the body: JSON by
  equality of its JSON (``equalToJson``), other text by ``contains`` of all of it (JSON that
  playback would not parse, over ``MAX_PARSED_BODY`` or nested deeper than orjson writes,
  too), bytes that are not UTF-8 not at all;
- the answer's status, headers and body; hop-by-hop and framing headers are left out (the
  server frames what it plays), and so are those the ``Connection`` header names;
  ``Set-Cookie`` is kept unless ``keepSetCookie`` is false; a header sent more than once (in
  any case) is a list of its values; request headers that carry credentials are never stored
  (they only match when named in ``matchHeaders``, and never when sensitive);
- a body that is not UTF-8 text, or that would be taken for a template (``{{``, ``{%``), is
  kept as ``base64Body``: it plays back byte for byte;
- the upstream's absolute URLs in the answer's text and its ``Location``-like headers are
  rewritten to the address the client used, so a client that follows them stays on Simulacra.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from simulacra.errors import Invalid, shown
from simulacra.models import RecordRules as RecordRulesDocument
from simulacra.models import keys
from simulacra.virtual.matching import MAX_PARSED_BODY
from simulacra.virtual.templates import is_template

# Never stored: they carry credentials (a recording is shared, exported, committed).
SENSITIVE_HEADERS = frozenset(
    {"authorization", "cookie", "proxy-authorization", "x-api-key", "x-auth-token"}
)
# RFC 9110 7.6.1 and the framing: the server that plays the stub decides these.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",  # the proxy stores (and plays) the decoded body
    }
)
# Answer headers the server that plays a stub writes itself (a recorded one would be a
# second Date).
SERVER_HEADERS = frozenset({"date"})
# Answer headers whose value may be an absolute URL of the upstream.
URL_HEADERS = frozenset({"location", "content-location", "link", "refresh"})
RECORD_KEYS = keys(RecordRulesDocument)
UPSTREAM_KEYS = ("url", "verify", "caBundle", "connectTimeout", "readTimeout", "record")
MAX_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class RecordRules:
    """What of an exchange a stub keeps and matches on (a session's ``record`` option)."""

    ignore_query: frozenset[str] = frozenset()
    match_headers: tuple[str, ...] = ()  # lower-case
    redact: frozenset[str] = SENSITIVE_HEADERS  # lower-case: never stored
    keep_set_cookie: bool = True
    record_failures: bool = False  # store the 502/504 of an upstream that failed

    def __post_init__(self) -> None:
        # However the rules were built: names compared lower-case, and the credentials
        # headers redacted whatever ``redact`` was given.
        lowered = tuple(name.strip().lower() for name in self.match_headers)
        object.__setattr__(self, "match_headers", lowered)
        redact = frozenset(name.strip().lower() for name in self.redact)
        object.__setattr__(self, "redact", SENSITIVE_HEADERS | redact)

    @classmethod
    def from_dict(cls, doc: object) -> RecordRules:
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise Invalid("record must be an object of recording rules")
        unknown = sorted(set(doc) - set(RECORD_KEYS))
        if unknown:
            raise Invalid(
                f"unknown record key {shown(unknown[0])}; known: {', '.join(RECORD_KEYS)}"
            )
        redact = _names(doc.get("redactHeaders"), "record.redactHeaders")
        return cls(
            ignore_query=frozenset(_strings(doc.get("ignoreQuery"), "record.ignoreQuery")),
            match_headers=tuple(
                n for n in _names(doc.get("matchHeaders"), "record.matchHeaders") if n
            ),
            redact=SENSITIVE_HEADERS | frozenset(redact),
            keep_set_cookie=_flag(doc.get("keepSetCookie", True), "record.keepSetCookie"),
            record_failures=_flag(doc.get("recordFailures", False), "record.recordFailures"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ignoreQuery": sorted(self.ignore_query),
            "matchHeaders": list(self.match_headers),
            "redactHeaders": sorted(self.redact - SENSITIVE_HEADERS),
            "keepSetCookie": self.keep_set_cookie,
            "recordFailures": self.record_failures,
        }


@dataclass(frozen=True)
class Upstream:
    """Where a recording session forwards, how, and what it keeps."""

    url: str  # scheme://host[:port][/base path], no query
    verify: bool = True
    ca_bundle: str | None = None  # a CA file for the upstream's certificate
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    rules: RecordRules = field(default_factory=RecordRules)

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def base_path(self) -> str:
        return urlsplit(self.url).path.rstrip("/")

    @classmethod
    def parse(cls, url: object, options: dict[str, Any]) -> Upstream:
        """The begin action's ``upstream`` and its options (``verify``, ``caBundle``,
        ``connectTimeout``, ``readTimeout``, ``record``)."""
        if not isinstance(url, str):
            raise Invalid(f"upstream must be an http(s) URL, got {shown(url)}")
        if any(c.isspace() or not c.isprintable() for c in url):
            # urlsplit drops tabs and newlines silently: a pasted URL would not be the one used
            raise Invalid(f"upstream must not contain spaces or control characters: {shown(url)}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(f"upstream must be an http(s) URL with a host, got {shown(url)}")
        if "?" in url or "#" in url:  # an empty one too: "https://host?" is no base URL
            raise Invalid(f"upstream must not have a query or fragment, got {shown(url)}")
        if "@" in parts.netloc:
            raise Invalid(
                "upstream must not carry credentials (user:password@host): the session keeps"
                " and exports its upstream; let the client send them, as headers never stored"
            )
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0 or parts.netloc.endswith(":"):
            raise Invalid(f"upstream has an invalid port (1-65535), got {shown(url)}")
        # Scheme and host lower-case, as the URLs rewritten in answers are written.
        url = f"{parts.scheme}://{parts.netloc.lower()}{parts.path}"
        ca_bundle = options.get("caBundle")
        if ca_bundle is not None and not isinstance(ca_bundle, str):
            raise Invalid("caBundle must be the path of a CA certificate file")
        return cls(
            url=url.rstrip("/"),
            verify=_flag(options.get("verify", True), "verify"),
            ca_bundle=ca_bundle,
            connect_timeout=_seconds(options.get("connectTimeout", 5.0), "connectTimeout"),
            read_timeout=_seconds(options.get("readTimeout", 30.0), "readTimeout"),
            rules=RecordRules.from_dict(options.get("record")),
        )

    def to_dict(self) -> dict[str, Any]:
        """As a session keeps it (``Session.upstream``); ``from_dict`` reads it back."""
        return {
            "url": self.url,
            "verify": self.verify,
            "caBundle": self.ca_bundle,
            "connectTimeout": self.connect_timeout,
            "readTimeout": self.read_timeout,
            "record": self.rules.to_dict(),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Upstream:
        return cls.parse(doc.get("url"), doc)


@dataclass(frozen=True)
class Exchange:
    """One request as the client sent it and the answer the upstream gave."""

    method: str
    path: str  # as the client asked for it (no base path of the upstream)
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    status: int
    response_headers: list[tuple[str, str]]
    response_body: bytes
    target_host: str | None = None  # a forward proxy's: the host the client asked for


def stub_document(
    exchange: Exchange, rules: RecordRules, rewrite: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The stub a PUT would store for ``exchange``. ``rewrite``: (the upstream's URL, base
    path included (``Upstream.url``), and the address the client used) for absolute URLs in
    the answer (``rewrite_urls``)."""
    request = _request_matchers(exchange, rules)
    return {
        "priority": _priority(request),
        "request": request,
        "response": _response(exchange, rules, rewrite),
    }


# Recorded stubs are tried most specific first: ``queryArgs`` and ``contains`` match a
# subset, so ``GET /items`` recorded first would otherwise answer ``GET /items?page=2``, and
# a body ``<a>1</a>`` the body ``<a>1</a><b/>``. More query values first, then longer bodies
# (lower priorities win; a stub PUT without one comes after them all).
RECORDED_PRIORITY = 1_000_000_000


def _priority(request: dict[str, Any]) -> int:
    values = sum(len(v) for v in request.get("queryArgs", {}).values())
    length = sum(len(p) for p in request.get("bodyPatterns", {}).get("contains", ()))
    return RECORDED_PRIORITY - min(values, 99) * 10_000_000 - min(length, 9_999_999)


def _request_matchers(exchange: Exchange, rules: RecordRules) -> dict[str, Any]:
    request: dict[str, Any] = {"method": exchange.method.upper(), "urlPath": exchange.path}
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(exchange.query, keep_blank_values=True):
        if name not in rules.ignore_query:
            query.setdefault(name, []).append(value)
    if query:
        request["queryArgs"] = query
    headers: dict[str, str] = {}
    wanted = set(rules.match_headers) - rules.redact
    for name, value in exchange.headers:
        if name.lower() in wanted:
            headers[name.lower()] = value
    if exchange.target_host is not None:
        headers["host"] = exchange.target_host
    if headers:
        request["headers"] = headers
    body = _body_matcher(exchange.body, _header(exchange.headers, "content-type"))
    if body is not None:
        request["bodyPatterns"] = body
    return request


def _body_matcher(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None  # bytes: matched by method, path and query only
    # A body playback would not parse (over MAX_PARSED_BODY), or one deeper than orjson
    # writes (the store could not keep its stub), is matched as text.
    if _is_json(content_type, text) and len(text) <= MAX_PARSED_BODY:
        try:
            value = orjson.loads(text)
            orjson.dumps(value)
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
        else:
            if isinstance(value, str):  # equalToJson reads a string as JSON text
                value = orjson.dumps(value).decode()
            return {"equalToJson": [value]}
    if not text.strip():
        return None
    return {"contains": [text]}


def _is_json(content_type: str | None, text: str) -> bool:
    if content_type is not None:
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind == "application/json" or kind.endswith("+json"):
            return True
    return text.lstrip()[:1] in ("{", "[")


def local_cookie(value: str, secure: bool) -> str:
    """A ``Set-Cookie`` of the upstream made one the client keeps from the recording address:
    no ``Domain`` (the upstream's domain is not the client's: the cookie would be dropped),
    and over plain HTTP no ``Secure`` (nor ``SameSite=None``, which needs it)."""
    pair, *attributes = value.split(";")
    kept = []
    for attribute in attributes:
        key = attribute.strip().partition("=")[0].strip().lower()
        if key == "domain":
            continue
        if not secure and (
            key == "secure" or attribute.replace(" ", "").lower() == "samesite=none"
        ):
            continue
        kept.append(attribute)
    return ";".join([pair, *kept])


def _response(
    exchange: Exchange, rules: RecordRules, rewrite: tuple[str, str] | None
) -> dict[str, Any]:
    # RFC 9110 7.6.1: the headers the Connection header names are hop-by-hop too.
    dropped = (
        HOP_BY_HOP
        | SERVER_HEADERS
        | {
            option.strip().lower()
            for name, value in exchange.response_headers
            if name.lower() == "connection"
            for option in value.split(",")
        }
    )
    headers: dict[str, str | list[str]] = {}
    spelled: dict[str, str] = {}  # lower-case name -> as first written
    for name, value in exchange.response_headers:
        lower = name.lower()
        if lower in dropped or (lower == "set-cookie" and not rules.keep_set_cookie):
            continue
        if rewrite is not None and lower in URL_HEADERS:
            value = rewrite_urls(value, *rewrite)
        elif rewrite is not None and lower == "set-cookie":
            value = local_cookie(value, secure=rewrite[1].startswith("https:"))
        key = spelled.setdefault(lower, name)  # Set-Cookie and set-cookie: one list
        known = headers.get(key)
        if known is None:
            headers[key] = value
        elif isinstance(known, list):
            known.append(value)
        else:
            headers[key] = [known, value]
    response: dict[str, Any] = {"status": exchange.status}
    if headers:
        response["headers"] = headers
    text = _text(exchange.response_body)
    if text is not None and rewrite is not None:
        text = rewrite_urls(text, *rewrite)
    if text is None:
        response["base64Body"] = base64.b64encode(exchange.response_body).decode("ascii")
    elif is_template(text):
        # A page with "{{" (Vue, Angular, Handlebars...) would play as a Jinja template, or
        # be refused as one: bytes play verbatim.
        response["base64Body"] = base64.b64encode(text.encode()).decode("ascii")
    else:
        response["body"] = text
    return response


def _text(body: bytes) -> str | None:
    """The body as text, or None when it is bytes (not UTF-8, or with control characters
    other than whitespace: an image may decode by chance)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text[:4096]):
        return None
    return text


def rewrite_urls(text: str, upstream: str, local: str) -> str:
    """``upstream``'s absolute URLs in ``text`` made ``local``'s: as written, with the
    scheme's default port spelled out (or left out), and with JSON's escaped slashes.

    ``upstream`` may have a base path (``Upstream.url``): ``https://h/v2/servers`` becomes
    ``local/servers``. Only the upstream itself: not another port of its host
    (``https://h:8443``), a longer host (``https://h.example.net``) or a longer last path
    segment (``https://h/v2beta``)."""
    needle, pattern = _upstream_urls(upstream)
    if needle not in text:
        return text
    local = local.rstrip("/")
    escaped = local.replace("/", "\\/")
    return pattern.sub(lambda m: local if m.group(1) == "//" else escaped, text)


# What may not follow the upstream's URL in a URL of its own: more of its host, port or
# last path segment (or a user name's "@").
_URL_GOES_ON = r"(?![\w.~%:@-])"


@functools.lru_cache(maxsize=256)
def _upstream_urls(upstream: str) -> tuple[str, re.Pattern[str]]:
    """(a text every form of ``upstream`` contains, a pattern of them all, its group 1 the
    slashes after the scheme: ``//``, or JSON's ``\\/\\/``). The pattern starts with a
    literal (the scheme), which ``re`` finds fast."""
    parts = urlsplit(upstream)
    host = parts.netloc
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        port = None
    optional_port = ""
    if default is not None and host and (port is None or port == default):
        if port is not None:
            host = host.rpartition(":")[0]
        optional_port = f"(?::{default})?"
    path = "".join(r"(?:/|\\/)" if c == "/" else re.escape(c) for c in parts.path.rstrip("/"))
    pattern = re.compile(
        re.escape(f"{parts.scheme}:")
        + r"(//|\\/\\/)"
        + re.escape(host)
        + optional_port
        + path
        + _URL_GOES_ON
    )
    return host, pattern


def redacted(headers: list[tuple[str, str]], rules: RecordRules) -> list[tuple[str, str]]:
    """The request headers a record may show (the tracker's, a HAR's): no credentials."""
    return [(k, v) for k, v in headers if k.lower() not in rules.redact]


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def _strings(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"{where} must be a list of strings")
    return value


def _names(value: object, where: str) -> list[str]:
    return [name.strip().lower() for name in _strings(value, where)]


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{where} must be true or false, got {shown(value)}")
    return value


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{where} must be a number of seconds, got {shown(value)}")
    if not 0 < value <= MAX_TIMEOUT_S:
        raise Invalid(f"{where} must be over 0 and at most {MAX_TIMEOUT_S:g} seconds")
    return float(value)
