"""ASGI scopes for tests that call the app, a middleware or a router directly."""

from __future__ import annotations

from typing import Any


def http_scope(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    root_path: str = "",
    *,
    server: tuple[str, int] = ("localhost", 8900),
    client: tuple[str, int] | None = ("10.1.2.3", 40000),
) -> dict[str, Any]:
    """An HTTP request's scope as a server builds it; ``headers`` default to a Host header."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query,
        "headers": headers if headers is not None else [(b"host", b"localhost:8900")],
        "server": server,
    }
    if client is not None:
        scope["client"] = client
    return scope
