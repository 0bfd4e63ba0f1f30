"""HAR 1.2 (a browser's saved network log) read as recorded exchanges.

Pure: ``read_har`` turns the parsed JSON into ``recording.Exchange`` values, which the HAR
import route stores by the recording rules (redaction, sequences, binary bodies), as the
recording proxy stores what it forwards.

Read from each ``log.entries[i]``: ``request.method``, ``request.url`` (absolute; its path,
percent-decoded as the server decodes request paths, and its raw query), ``request.headers``,
``request.postData.text`` (or its form ``params`` when there is no text), ``response.status``,
``response.headers`` and ``response.content.text`` (bytes when ``encoding`` is ``base64``).

Skipped, since nothing could play them: entries the browser never got an answer for (status
0: failed, blocked, aborted), 1xx answers (a WebSocket handshake), ``CONNECT`` tunnels, and
URLs that are not http(s) (``data:``, ``blob:``, ``ws:``...). HTTP/2 pseudo-headers
(``:authority``...) are dropped. Anything else malformed is ``Invalid`` naming
``entries[i]``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from simulacra.errors import Invalid, shown
from simulacra.virtual.model import HEADER_NAME_RE
from simulacra.virtual.recording import Exchange

MAX_ENTRIES = 10_000
PLAYED_SCHEMES = ("http", "https")
SHAPE = 'a HAR is a JSON object {"log": {"entries": [...]}} (HAR 1.2)'


@dataclass(frozen=True)
class Har:
    """What a HAR holds that can be played: ``exchanges[k]`` came from
    ``entries[indices[k]]``, in the order the browser started them."""

    exchanges: list[Exchange]
    indices: list[int]
    entries: int  # entries read
    skipped: int  # entries that cannot be played


def exchanges(document: object) -> list[Exchange]:
    """The playable exchanges of a parsed HAR document, in the order they were started."""
    return read_har(document).exchanges


def read_har(document: object) -> Har:
    """Read a parsed HAR document; ``Invalid`` naming the entry for anything malformed."""
    if not isinstance(document, dict):
        raise Invalid(SHAPE)
    log = document.get("log")
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(entries, list):
        raise Invalid(f"log.entries is missing: {SHAPE}")
    if len(entries) > MAX_ENTRIES:
        raise Invalid(
            f"the HAR has {len(entries)} entries; at most {MAX_ENTRIES} are imported at once"
        )
    found: list[tuple[int, Exchange]] = []
    for i, entry in enumerate(entries):
        try:
            exchange = _exchange(entry)
        except Invalid as exc:
            raise Invalid(f"entries[{i}]: {exc.message}") from None
        if exchange is not None:
            found.append((i, exchange))
    # A sequence replays in the order its requests were made; browsers write entries as they
    # finish, or in any order, but each carries its start time.
    starts = [_started(entries[i]) for i, _ in found]
    known = [s for s in starts if s is not None]
    if len(known) == len(found):
        order = sorted(range(len(found)), key=known.__getitem__)  # stable: ties keep file order
        found = [found[k] for k in order]
    return Har(
        exchanges=[e for _, e in found],
        indices=[i for i, _ in found],
        entries=len(entries),
        skipped=len(entries) - len(found),
    )


def _exchange(entry: object) -> Exchange | None:
    """One entry as an exchange, or None when it cannot be played."""
    if not isinstance(entry, dict):
        raise Invalid("an entry must be an object with request and response")
    request = _object(entry.get("request"), "request")
    response = _object(entry.get("response"), "response")
    method = request.get("method")
    if not isinstance(method, str) or not HEADER_NAME_RE.fullmatch(method):
        raise Invalid(f"request.method must be an HTTP method, got {shown(method)}")
    if method.upper() == "CONNECT":
        return None  # a tunnel (its URL is host:port): what went through it is not here
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise Invalid(f"request.url must be an absolute URL, got {shown(url)}")
    status = response.get("status")
    if isinstance(status, bool) or not isinstance(status, int):
        raise Invalid(f"response.status must be an integer, got {shown(status)}")
    if not (status == 0 or 100 <= status <= 599):
        raise Invalid(f"response.status must be an HTTP status (100-599) or 0, got {status}")
    try:
        parts = urlsplit(url)
    except ValueError:  # a bad IPv6 literal, say
        raise Invalid(f"request.url is not a URL: {shown(url)}") from None
    scheme = parts.scheme.lower()
    if scheme and scheme not in PLAYED_SCHEMES:
        return None  # data:, blob:, ws:, chrome-extension:... never reached a server
    if not scheme or not parts.netloc:
        raise Invalid(f"request.url must be an absolute http(s) URL, got {shown(url)}")
    if status < 200:
        return None  # 0: no answer (failed, blocked, aborted); 1xx: an upgrade, not an answer
    return Exchange(
        method=method.upper(),
        # As the server decodes a request's path, so the stub's urlPath matches it.
        path=unquote(parts.path) or "/",
        query=parts.query,
        headers=_headers(request.get("headers"), "request.headers"),
        body=_post_data(request.get("postData")),
        status=status,
        response_headers=_headers(response.get("headers"), "response.headers"),
        response_body=_content(response.get("content")),
    )


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{where} is missing: an entry has a request and a response object")
    return value


def _headers(value: object, where: str) -> list[tuple[str, str]]:
    """``[{name, value}]`` as (name, value) pairs, without HTTP/2 pseudo-headers."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"{where} must be a list of {{name, value}} objects")
    out: list[tuple[str, str]] = []
    for j, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else None
        text = item.get("value") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(text, str):
            raise Invalid(f"{where}[{j}] must be an object {{name, value}} of strings")
        if name.startswith(":"):
            continue  # :authority, :method, :path, :scheme, :status (HTTP/2)
        if not HEADER_NAME_RE.fullmatch(name):
            raise Invalid(f"{where}[{j}]: {shown(name)} is not a header name")
        if "\0" in text:
            raise Invalid(f"{where}[{j}] ({name}) must not contain NUL")
        # A browser shows a header's bytes as UTF-8 text; the wire had those bytes.
        if not text.isascii():
            text = text.encode("utf-8").decode("latin-1")
        if "\n" in text:  # a browser writes repeated fields (Set-Cookie) as a line each
            lines = (line.strip("\r") for line in text.split("\n"))
            out.extend((name, line) for line in lines if line)
        else:
            out.append((name, text))
    return out


def _post_data(value: object) -> bytes:
    """The request body: ``postData.text``, or its form ``params`` when there is no text."""
    if value is None:
        return b""
    if not isinstance(value, dict):
        raise Invalid("request.postData must be an object")
    text = value.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise Invalid("request.postData.text must be a string")
        return _decoded(text, value.get("encoding"), "request.postData")
    params = value.get("params")
    if params is None:
        return b""
    if not isinstance(params, list):
        raise Invalid("request.postData.params must be a list of {name, value} objects")
    pairs: list[tuple[str, str]] = []
    for j, item in enumerate(params):
        name = item.get("name") if isinstance(item, dict) else None
        text = item.get("value", "") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(text, str):
            raise Invalid(f"request.postData.params[{j}] must be an object {{name, value}}")
        pairs.append((name, text))
    return urlencode(pairs).encode("ascii")


def _content(value: object) -> bytes:
    """The answer's body: ``content.text``, base64 when ``content.encoding`` says so."""
    if value is None:
        return b""
    if not isinstance(value, dict):
        raise Invalid("response.content must be an object")
    text = value.get("text")
    if text is None:
        return b""  # the browser kept no body (a redirect, a 204, or not saved)
    if not isinstance(text, str):
        raise Invalid("response.content.text must be a string")
    return _decoded(text, value.get("encoding"), "response.content")


def _decoded(text: str, encoding: object, where: str) -> bytes:
    if encoding is None or encoding == "":
        return text.encode("utf-8")
    if encoding != "base64":
        raise Invalid(f"{where}.encoding must be 'base64' or absent, got {shown(encoding)}")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{where}.text is not valid base64") from None


def _started(entry: object) -> datetime | None:
    """The entry's ``startedDateTime`` (ISO 8601, with its offset), None if unreadable."""
    value = entry.get("startedDateTime") if isinstance(entry, dict) else None
    if not isinstance(value, str):
        return None
    try:
        started = datetime.fromisoformat(value)
    except ValueError:
        return None
    return started if started.tzinfo is not None else None
