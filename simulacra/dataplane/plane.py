"""The data plane as one object: which route answers a request, and the body limit."""

from __future__ import annotations

from simulacra.dataplane import Claimer, Declared, Route
from simulacra.dataplane.playback import (
    MATCHER_PATH,
    STUBS_PREFIX,
    STUBS_SUFFIX,
    VIRTUAL_PREFIX,
    PlaybackRoutes,
    is_v1,
)
from simulacra.dataplane.ports import Ports
from simulacra.dataplane.request import Request


class DataPlane:
    """Playback (every door to it) first, then the cloud's hot routes; None: the app's."""

    def __init__(self, playback: PlaybackRoutes, cloud: Claimer, ports: Ports, limit: int) -> None:
        self.playback = playback
        self.cloud = cloud
        self.ports = ports
        self.limit = limit  # request bodies over this many bytes are refused (413)

    def claim(self, request: Request) -> Route | None:
        """The route that answers ``request``: every request on a bound session's port,
        then playback's paths (POST), the cloud's bulk POSTs and the /virtual/ prefix."""
        playback = self.playback
        if playback.bound and request.local is not None:
            route = playback.bound.get(request.local[1])
            if route is not None:
                return route
        path = request.path
        if request.method == "POST":
            if path.startswith(STUBS_PREFIX):
                name = path[len(STUBS_PREFIX) : -len(STUBS_SUFFIX)]
                if path.endswith(STUBS_SUFFIX) and name and "/" not in name:
                    return playback.stubs
                return None
            if path == MATCHER_PATH:
                return playback.matcher
            if is_v1(path):
                return playback.v1
            if not path.startswith(VIRTUAL_PREFIX):
                return self.cloud.claim(request)
        elif path == MATCHER_PATH or is_v1(path):
            return playback.post_only  # a 405, as for the admin API's routes
        if path.startswith(VIRTUAL_PREFIX):
            return playback.prefix
        return None

    def tunnels(self, request: Request) -> bool:
        """Whether a CONNECT passes through (unrecorded): on the port of a session that
        records an upstream. Elsewhere it is refused."""
        route = self.playback.bound.get(request.port) if request.local is not None else None
        return route is not None and route.records()

    @property
    def declared(self) -> list[Declared]:
        return [*self.playback.declared, *self.cloud.declared]
