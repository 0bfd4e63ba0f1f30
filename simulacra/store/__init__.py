"""The one persistence interface (``base.Store``) and its backends."""

from __future__ import annotations

from simulacra.store.base import Store


def open_store(url: str) -> Store:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``memory://``, or
    ``postgresql://user@host:port/db[?schema=name]`` (also ``postgres://``) for a store
    shared by several instances."""
    if url.startswith(("postgresql://", "postgres://")):
        from simulacra.store.postgres import PostgresStore

        return PostgresStore(url)
    from simulacra.store.sqlite import SQLiteStore, sqlite_path_from_url

    if url in ("memory://", "memory:", "sqlite://", "sqlite:///:memory:"):
        return SQLiteStore(":memory:")
    if url.startswith("sqlite:"):
        return SQLiteStore(sqlite_path_from_url(url))
    raise ValueError(
        f"unsupported store URL {url!r}: use sqlite:///file.db, memory:// or postgresql://..."
    )


__all__ = ["Store", "open_store"]
