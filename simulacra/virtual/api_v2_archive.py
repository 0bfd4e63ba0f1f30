"""Mirage REST API v2: zip upload and export (the HTTP edge; the format is in archive.py),
and HAR import (the format is in har.py).

Upload takes ``multipart/form-data`` with one or more ``.zip`` file parts (any field
name; Mirage's example uses ``files``). Each archive is read and validated before
anything is stored, and all archives are stored in one transaction: an upload
either imports every archive or changes nothing.

Export builds the zip from the live stubs on each request; nothing is written to
the server's disk, so an export link works on any instance behind a load balancer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulacra.background import run_in_slices
from simulacra.errors import Invalid, shown
from simulacra.models import ExportQuery, HarImport, HarImported
from simulacra.openapi import Reply
from simulacra.virtual.api_v2 import (
    VERSION_HEADER,
    endpoint,
    envelope,
    path_scenario,
    scenario_ref,
    service,
)
from simulacra.virtual.archive import (
    ArchiveLimits,
    NotAnArchive,
    archive_steps,
    read_archive,
    short_name,
)
from simulacra.virtual.har import SHAPE, Har, read_har
from simulacra.virtual.model import check_name, qualify
from simulacra.virtual.recording import RecordRules, stub_document
from simulacra.virtual.service import VirtualService
from simulacra.web import body_limit, json_response, operation, read_body, request_host, truthy

MAX_PARTS = 100  # archives plus form fields in one upload
# A HAR body over this is parsed and checked in a thread: the event loop keeps serving.
HAR_THREAD_BYTES = 64 * 1024
# What clients send for a .zip: browsers vary, curl -F sends octet-stream.
ZIP_TYPES = frozenset(
    {
        "application/zip",
        "application/x-zip-compressed",
        "application/x-zip",
        "application/octet-stream",
        "multipart/x-zip",
    }
)


@dataclass
class Part:
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)


class _MultipartCollector:
    """python-multipart callbacks that keep parts in memory (the body is already bounded)."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.done = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise Invalid(f"too many parts in the upload; at most {MAX_PARTS} are accepted")
        self.parts.append(Part())
        self._headers = {}

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].data += data[start:end]

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        part = self.parts[-1]
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", "replace") or "upload.zip"
        content_type, _ = parse_options_header(self._headers.get(b"content-type", b""))
        part.content_type = content_type.decode("latin-1").lower()

    def on_end(self) -> None:
        self.done = True


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/form-data body; ``NotAnArchive`` (415) for another type."""
    media_type, options = parse_options_header(content_type)
    if media_type.lower() != b"multipart/form-data":
        raise NotAnArchive(
            f"Content type {short_name(media_type.decode('latin-1')) or '(none)'} not supported:"
            " upload .zip archives as multipart/form-data file parts"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise Invalid("the multipart Content-Type has no boundary")
    collector = _MultipartCollector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise Invalid(f"the multipart body is malformed: {exc}") from None
    if not collector.done:
        raise Invalid("the multipart body is incomplete: its closing boundary is missing")
    return collector.parts


UPLOAD_BODY = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "items": {"type": "string", "contentMediaType": "application/zip"},
            "description": "export zips (any field name): YAML plus stub JSON files",
        }
    },
}


# The multipart body is parsed by parse_multipart, with its own bounds on parts.
@endpoint({NotAnArchive: 415})
@operation(
    body_schema=UPLOAD_BODY,
    body_media="multipart/form-data",
    converts=False,
    replies={200: Reply(dict[str, Any], "One archive: its scenario; several: a list")},
)
async def upload(request: Request) -> Response:
    """Upload zip archives (YAML + stub JSON files): create each scenario, begin playback."""
    limit = body_limit(request)
    body = await read_body(request, limit)
    parts = parse_multipart(request.headers.get("content-type", ""), body)
    results = await import_archives(service(request), request_host(request), parts, limit)
    if len(results) == 1:
        # Mirage answers one archive with the bare {scenario, session, total}.
        return json_response(results[0], 200, VERSION_HEADER)
    return envelope(results)


async def import_archives(
    svc: VirtualService, host: str, parts: list[Part], max_entry_bytes: int
) -> list[dict[str, Any]]:
    """Import the zip archives among an upload's ``parts`` (its file parts) into ``host``'s
    namespace, all or nothing: each archive's scenario, with its session begun in playback."""
    files = [p for p in parts if p.filename is not None]
    if not files:
        raise Invalid(
            "no archive in the upload: send each .zip as a multipart file part,"
            " e.g. files=[('files', ('scenario.zip', stream, 'application/zip'))]"
        )
    limits = ArchiveLimits(max_entry_bytes=max_entry_bytes)
    archives = []
    for part in files:
        source = part.filename or "upload.zip"
        if part.content_type and part.content_type not in ZIP_TYPES:
            raise NotAnArchive(
                f"{short_name(source)}: Content type {short_name(part.content_type)} not"
                " supported. Accepted format: .zip"
            )
        # Unpacking and parsing is CPU work: a thread keeps the event loop serving playback.
        archives.append(await asyncio.to_thread(read_archive, bytes(part.data), source, limits))
    results = await svc.import_scenarios(host, archives)
    for result in results:
        result["scenarioRef"] = scenario_ref(result["name"])
    return results


def _export_names(
    request: Request, name: str, scenario: str | None, session: str | None
) -> tuple[str, str]:
    """The names written into the exported YAML (defaults as Mirage: short name, epoch)."""
    short = name.rpartition(":")[2]
    if scenario:
        qualify(scenario, request_host(request))  # the same rules upload applies
    if session:
        check_name("session", session)
    epoch = int(service(request).now().timestamp())
    return scenario or short, session or f"{short}_{epoch}"


@endpoint()
@operation(
    query=ExportQuery,
    replies={
        200: Reply(
            schema={"type": "string", "contentMediaType": "application/zip"},
            media="application/zip",
        )
    },
)
async def export(request: Request, query: ExportQuery) -> Response:
    """Export a scenario's stubs as a zip that upload accepts (query: scenario, session)."""
    name = path_scenario(request)
    svc = service(request)
    scenario = await svc.get_scenario(name)
    stubs = await svc.all_stubs(scenario.name)
    yaml_scenario, session = _export_names(
        request,
        scenario.name,
        query.scenario or None,
        query.session or None,
    )
    data = await run_in_slices(archive_steps(yaml_scenario, session, stubs))
    filename = f"{yaml_scenario.rpartition(':')[2]}.zip"
    headers = {**VERSION_HEADER, "content-disposition": _attachment(filename)}
    return Response(data, 200, headers, media_type="application/zip")


def _attachment(filename: str) -> str:
    """Names may be any Unicode word characters; headers are Latin-1 (RFC 6266 filename*)."""
    if filename.isascii():
        return f'attachment; filename="{filename}"'
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


async def export_action(
    request: Request, name: str, session: str | None, runnable: str | bool | None
) -> dict[str, Any]:
    """``{"export": null}`` on the action route: a link to the export, nothing on disk."""
    if truthy(str(runnable).lower()):
        raise Invalid(
            "runnable exports (replaying a tracked playback session) are not supported;"
            " export without 'runnable'"
        )
    scenario = await service(request).get_scenario(name)
    yaml_scenario, _ = _export_names(request, scenario.name, None, session)
    query = urlencode({"session": session}) if session else ""
    url = (
        f"{str(request.base_url).rstrip('/')}{scenario_ref(quote(scenario.name, safe=':'))}/export"
    )
    url += f"?{query}" if query else ""
    return {
        "scenario": yaml_scenario,
        "scenarioRef": scenario_ref(scenario.name),
        "links": [url],
        # Mirage's keys, for its UI and scripts: [file, url] pairs.
        "yaml_links": [[f"{yaml_scenario}.zip", url]],
        "command_links": [],
    }


def _read_har_body(body: bytes) -> tuple[Har, list[dict[str, Any]]]:
    """Parse a HAR import's body: the HAR, and the stub document of each of its exchanges
    (the service checks them as a PUT does when it stores them)."""
    if not body.strip():
        raise Invalid(
            'request body is empty; a HAR document {"log": {"entries": [...]}} is expected'
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Invalid(SHAPE)
    unknown = sorted(k for k in document if k not in ("log", "record") and not k.startswith("_"))
    if unknown:
        raise Invalid(f"unknown key {shown(unknown[0])}: a HAR import is {{log, record?}}")
    rules = RecordRules.from_dict(document.get("record"))
    har = read_har(document)
    return har, [stub_document(exchange, rules) for exchange in har.exchanges]


# Read by _read_har_body: a large HAR is parsed off the event loop, and the HAR spec's
# ``_`` keys are let through (HarImport's other unknown keys are refused there).
@endpoint()
@operation(
    body=HarImport,
    converts=False,
    replies={201: Reply(HarImported, "Imported", enveloped=True)},
)
async def import_har(request: Request) -> Response:
    """Import a HAR 1.2 file (a browser's saved network log) as the scenario's stubs."""
    name = path_scenario(request)
    svc = service(request)
    scenario = await svc.get_scenario(name)  # 404 before reading a body for nothing
    body = await read_body(request, body_limit(request))
    return envelope(await record_har(svc, scenario.name, body), 201)


async def record_har(svc: VirtualService, scenario: str, body: bytes) -> dict[str, Any]:
    """Store a HAR document's exchanges (``body``, its JSON) as the scenario's stubs: what
    was imported (entries, skipped, stubs created and updated)."""
    if len(body) > HAR_THREAD_BYTES:
        har, documents = await asyncio.to_thread(_read_har_body, body)
    else:
        har, documents = _read_har_body(body)
    labels = [f"entries[{i}]" for i in har.indices]  # a refusal names the HAR's entry
    counts = await svc.record_documents(scenario, documents, labels)
    return {
        "scenario": scenario,
        "scenarioRef": scenario_ref(scenario),
        "entries": har.entries,
        "skipped": har.skipped,
        "stubs": {"created": counts.created, "updated": counts.updated},
    }


ROUTES = [
    Route("/api/v2/scenarios/upload", upload, methods=["POST"]),
    Route("/api/v2/scenarios/objects/{name}/har", import_har, methods=["POST"]),
    Route("/api/v2/scenarios/objects/{name}/export", export, methods=["GET"]),
]
