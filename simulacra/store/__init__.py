"""The one persistence interface (``base.Store``) and its backends."""

from __future__ import annotations

from simulacra.config import MEMORY_URLS, check_store_url, is_postgres_url, sqlite_path_from_url
from simulacra.store.base import Store


def open_store(url: str) -> Store:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``memory://``, or
    ``postgresql://user@host:port/db[?schema=name]`` (also ``postgres://``) for a store
    shared by several instances."""
    check_store_url(url)
    if is_postgres_url(url):
        from simulacra.store.postgres import PostgresStore

        return PostgresStore(url)
    if url in MEMORY_URLS:
        from simulacra.store.memory import MemoryStore

        return MemoryStore()
    from simulacra.store.sqlite import SQLiteStore

    return SQLiteStore(sqlite_path_from_url(url))


__all__ = ["Store", "open_store"]
