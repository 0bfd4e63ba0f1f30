"""What recording a real upstream means, as plain values: a recording session's settings, one
exchange (a request and the answer it got), and the stub document that exchange becomes.

Pure: the recording proxy (``dataplane/proxy.py``) and HAR import both build ``Exchange``
values and store ``stub_document``'s result as a PUT would; nothing here does I/O.

The rules, for both:
- matchers from the method, the path and the query (less ``ignoreQuery``), the headers the
  session names (``matchHeaders``), the target host for a forward proxy, and the body: JSON by
  equality of its JSON (``equalToJson``), other text by ``contains`` of all of it, bytes that
  are not UTF-8 not at all;
- the answer's status, headers and body; hop-by-hop and framing headers are left out (the
  server frames what it plays), ``Set-Cookie`` is kept unless ``keepSetCookie`` is false;
  request headers that carry credentials are never stored (they only match when named in
  ``matchHeaders``, and never when sensitive);
- a body that is not UTF-8 text is kept as ``base64Body``;
- the upstream's absolute URLs in the answer's text and its ``Location``-like headers are
  rewritten to the address the client used, so a client that follows them stays on Simulacra.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from simulacra.errors import Invalid, shown

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
# Answer headers whose value may be an absolute URL of the upstream.
URL_HEADERS = frozenset({"location", "content-location", "link", "refresh"})
RECORD_KEYS = ("ignoreQuery", "matchHeaders", "redactHeaders", "keepSetCookie", "recordFailures")
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
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid(f"upstream must be an http(s) URL with a host, got {shown(url)}")
        if parts.query or parts.fragment:
            raise Invalid(f"upstream must not have a query or fragment, got {shown(url)}")
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
    """The stub a PUT would store for ``exchange``. ``rewrite``: (the upstream's origin,
    the client's) for absolute URLs in the answer."""
    return {
        "request": _request_matchers(exchange, rules),
        "response": _response(exchange, rules, rewrite),
    }


def _request_matchers(exchange: Exchange, rules: RecordRules) -> dict[str, Any]:
    request: dict[str, Any] = {"method": exchange.method.upper(), "urlPath": exchange.path}
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(exchange.query, keep_blank_values=True):
        if name not in rules.ignore_query:
            query.setdefault(name, []).append(value)
    if query:
        request["queryArgs"] = query
    headers: dict[str, str] = {}
    wanted = [n for n in rules.match_headers if n not in rules.redact]
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
    if _is_json(content_type, text):
        try:
            return {"equalToJson": [orjson.loads(text)]}
        except orjson.JSONDecodeError:
            pass
    if not text.strip():
        return None
    return {"contains": [text]}


def _is_json(content_type: str | None, text: str) -> bool:
    if content_type is not None:
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind == "application/json" or kind.endswith("+json"):
            return True
    return text.lstrip()[:1] in ("{", "[")


def _response(
    exchange: Exchange, rules: RecordRules, rewrite: tuple[str, str] | None
) -> dict[str, Any]:
    headers: dict[str, str | list[str]] = {}
    for name, value in exchange.response_headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or (lower == "set-cookie" and not rules.keep_set_cookie):
            continue
        if rewrite is not None and lower in URL_HEADERS:
            value = rewrite_urls(value, *rewrite)
        known = headers.get(name)
        if known is None:
            headers[name] = value
        elif isinstance(known, list):
            known.append(value)
        else:
            headers[name] = [known, value]
    response: dict[str, Any] = {"status": exchange.status}
    if headers:
        response["headers"] = headers
    text = _text(exchange.response_body)
    if text is None:
        response["base64Body"] = base64.b64encode(exchange.response_body).decode("ascii")
    else:
        response["body"] = rewrite_urls(text, *rewrite) if rewrite is not None else text
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
    scheme's default port spelled out, and with JSON's escaped slashes."""
    if upstream not in text and upstream.replace("/", "\\/") not in text:
        return text
    scheme, _, netloc = upstream.partition("://")
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    forms = [upstream]
    if default and ":" not in netloc:
        forms.insert(0, upstream + default)
    for form in forms:
        text = text.replace(form, local)
        text = text.replace(form.replace("/", "\\/"), local.replace("/", "\\/"))
    return text


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
