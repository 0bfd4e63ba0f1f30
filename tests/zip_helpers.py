"""Build scenario archives in memory and upload them, for the upload/export tests."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import requests

UPLOAD = "/api/v2/scenarios/upload"


def config(scenario: str, session: str, files: list[str] | None = None) -> str:
    """The YAML that names an archive's scenario and session (``stubs:`` optional)."""
    text = f"recording:\n  scenario: {scenario}\n  session: {session}\n"
    if files is not None:
        text += "  stubs:\n" + "".join(f"  - file: {name}\n" for name in files)
    return text


def make_zip(
    entries: dict[str, Any] | list[tuple[str | zipfile.ZipInfo, Any]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """A zip of ``name -> content`` (a name may be a ZipInfo); dicts are written as JSON."""
    buffer = io.BytesIO()
    items = entries.items() if isinstance(entries, dict) else entries
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, content in items:
            if isinstance(content, dict | list):
                content = json.dumps(content)
            zf.writestr(name, content)
    return buffer.getvalue()


def scenario_zip(scenario: str, session: str, stubs: list[dict[str, Any]]) -> bytes:
    """The seed's structure: ``<scenario>.yaml`` + ``stub_0.json``, ``stub_1.json``..."""
    entries: dict[str, Any] = {f"{scenario}.yaml": config(scenario, session)}
    entries.update({f"stub_{i}.json": doc for i, doc in enumerate(stubs)})
    return make_zip(entries)


def upload(
    http: requests.Session, base_url: str, *archives: bytes | tuple[str, bytes, str]
) -> requests.Response:
    """POST archives as Mirage's example does: file parts named 'files', application/zip."""
    files = []
    for i, archive in enumerate(archives):
        name, data, content_type = (
            archive if isinstance(archive, tuple) else (f"a{i}.zip", archive, "application/zip")
        )
        files.append(("files", (name, data, content_type)))
    return http.post(base_url + UPLOAD, files=files, data={})


def read_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}
