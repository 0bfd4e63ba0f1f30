"""The data plane as one object: which route answers a request, and the body limit."""

from __future__ import annotations

from simulacra.dataplane import Claimer, Declared, Route
from simulacra.dataplane.playback import PlaybackRoutes
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
        route = self.playback.claim(request)
        if route is None and request.method == "POST":
            return self.cloud.claim(request)
        return route

    @property
    def declared(self) -> list[Declared]:
        return [*self.playback.declared, *self.cloud.declared]
