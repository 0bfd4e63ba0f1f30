"""A Python client for a running Simulacra: scenarios, recording and playing sessions as
context managers, the tracker, resets and the cloud's clock, over httpx.

    sim = Simulacra("http://localhost:8900")
    sim.create_scenario("orders")
    with sim.recording("orders") as rec:
        rec.stub({"method": "GET", "urlPath": "/orders/1"}, {"status": 200, "body": "one"})
    with sim.playing("orders", port=0) as play:
        httpx.get(play.url + "/orders/1").text   # "one"

Errors of the API come back as ``SimulacraError`` with the status and the server's message.
The pytest plugin (``simulacra.testing``) gives one of these per test, reset afterwards.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

SCENARIOS = "/api/v2/scenarios"


class SimulacraError(Exception):
    """The server refused a call: its HTTP status and the message of its error envelope."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Session:
    """A begun session: ended when its ``with`` block ends (or by ``end()``)."""

    def __init__(self, sim: Simulacra, scenario: str, name: str, begun: dict[str, Any]) -> None:
        self.sim = sim
        self.scenario = scenario
        self.name = name
        self.port: int | None = begun.get("port")
        self.ended = False

    @property
    def url(self) -> str:
        """Where an application reaches it: its own port, else the ``/virtual/`` prefix."""
        if self.port is not None:
            host = httpx.URL(self.sim.base_url).host
            return f"http://{host}:{self.port}"
        return f"{self.sim.base_url}/virtual/{self.scenario}/{self.name}"

    def end(self) -> None:
        if not self.ended:
            self.sim.action(self.scenario, {"end": None, "session": self.name})
            self.ended = True

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end()


class Recording(Session):
    """A session in record mode: ``stub`` adds a stub (the same request again extends its
    sequence); with an upstream, every request at ``url`` is forwarded and recorded."""

    def stub(
        self,
        request: dict[str, Any],
        response: dict[str, Any] | list[dict[str, Any]],
        priority: int | None = None,
    ) -> str:
        """Add a stub: ``request`` matchers, ``response`` (a list: a sequence of them).
        Returns the stub's id."""
        document: dict[str, Any] = {"request": request}
        if isinstance(response, list):
            document["responses"] = response
        else:
            document["response"] = response
        if priority is not None:
            document["priority"] = priority
        data = self.sim.call(
            "PUT",
            f"{SCENARIOS}/objects/{self.scenario}/stubs",
            json=document,
            headers={"session": self.name},
        )
        return str(data["key"])


class Simulacra:
    """A client of one Simulacra server (``base_url``: its main port)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Simulacra:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the calls -----------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; its ``data`` (v2 envelope) or its JSON; SimulacraError on a 4xx/5xx."""
        reply = self.http.request(method, path, **kwargs)
        if reply.status_code >= 400:
            raise SimulacraError(reply.status_code, _message(reply))
        if not reply.content:
            return None
        if reply.headers.get("content-type", "").startswith("application/json"):
            body = reply.json()
            return body["data"] if isinstance(body, dict) and "data" in body else body
        return reply.content

    def action(self, scenario: str, document: dict[str, Any]) -> Any:
        return self.call("POST", f"{SCENARIOS}/objects/{scenario}/action", json=document)

    # scenarios -----------------------------------------------------------------------

    def create_scenario(self, name: str) -> None:
        self.call("PUT", SCENARIOS, json={"scenario": name})

    def scenarios(self) -> list[dict[str, Any]]:
        """Each scenario with its stub count and sessions (names are ``host:name``)."""
        return list(self.call("GET", f"{SCENARIOS}/detail"))

    def delete_scenario(self, name: str) -> None:
        self.call("DELETE", f"{SCENARIOS}/objects/{name}", params={"force": "true"})

    def stubs(self, scenario: str) -> list[dict[str, Any]]:
        return [item["stub"] for item in self.call("GET", f"{SCENARIOS}/objects/{scenario}/stubs")]

    # sessions ------------------------------------------------------------------------

    def recording(
        self,
        scenario: str,
        session: str | None = None,
        *,
        upstream: str | None = None,
        port: int | None = None,
        append: bool = False,
        **options: Any,
    ) -> Recording:
        """Begin recording ``scenario`` (created when missing). ``upstream``: forward every
        request at the session's ``url`` there and record it (``options``: verify,
        caBundle, connectTimeout, readTimeout, record)."""
        try:
            self.create_scenario(scenario)
        except SimulacraError as exc:
            if exc.status != 422:  # 422: it exists already, as Mirage says
                raise
        name = session or _fresh("rec")
        document: dict[str, Any] = {"begin": None, "session": name, "mode": "record"}
        if append:
            document["append"] = True
        if upstream is not None:
            document["upstream"] = upstream
            document.update(options)
        if port is not None:
            document["port"] = port
        return Recording(self, scenario, name, self.action(scenario, document))

    def playing(
        self, scenario: str, session: str | None = None, *, port: int | None = None
    ) -> Session:
        """Begin playing ``scenario``; ``port`` (0: any free one) serves it on a port of its
        own, else it is at ``/virtual/{scenario}/{session}/`` (``Session.url`` says which)."""
        name = session or _fresh("play")
        document: dict[str, Any] = {"begin": None, "session": name, "mode": "playback"}
        if port is not None:
            document["port"] = port
        return Session(self, scenario, name, self.action(scenario, document))

    # archives ------------------------------------------------------------------------

    def upload(self, archive: str | Path) -> Any:
        """Upload a scenario archive (an export zip): its scenario, begun in playback."""
        path = Path(archive)
        files = {"files": (path.name, path.read_bytes(), "application/zip")}
        return self.call("POST", f"{SCENARIOS}/upload", files=files)

    def export(self, scenario: str) -> bytes:
        """The scenario as a zip that ``upload`` (here or elsewhere) plays."""
        return bytes(self.call("GET", f"{SCENARIOS}/objects/{scenario}/export"))

    def import_har(self, scenario: str, har: str | Path | dict[str, Any]) -> Any:
        """A browser's HAR file (a path or the parsed document) as the scenario's stubs."""
        document = har if isinstance(har, dict) else _read_json(Path(har))
        return self.call("POST", f"{SCENARIOS}/objects/{scenario}/har", json=document)

    # delay policies, tracker ---------------------------------------------------------

    def delay_policy(self, document: dict[str, Any]) -> None:
        """Create or replace a delay policy (``{"name", "delay_type", ...}``)."""
        self.call("PUT", "/api/v2/delay-policy", json=document)

    def tracked(self, q: str = "", page: int = 100) -> Iterator[dict[str, Any]]:
        """The tracker's records matching ``q``, newest first, fetched a page at a time."""
        for skip in itertools.count(0, page):
            params: dict[str, Any] = {"skip": skip, "limit": page}
            if q:
                params["q"] = q
            reply = self.http.get("/api/v2/tracker/records", params=params)
            if reply.status_code >= 400:
                raise SimulacraError(reply.status_code, _message(reply))
            body = reply.json()
            yield from body["data"]
            if body["paging"]["next"] is None:
                return

    # reset, cloud --------------------------------------------------------------------

    def reset(self, side: str | None = None) -> None:
        """Forget everything (``side``: ``"virtual"`` or ``"cloud"`` for one side only)."""
        self.call("POST", "/api/v2/reset" + (f"/{side}" if side else ""))

    def tick(self, seconds: float) -> str:
        """Move the cloud mocks' virtual clock on; the new time (ISO 8601)."""
        return str(self.call("POST", "/mimic/v1.1/tick", json={"amount": seconds})["now"])


def _message(reply: httpx.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if "message" in body:
            return str(body["message"])
    return reply.text[:500]


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _read_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text(encoding="utf-8"))
