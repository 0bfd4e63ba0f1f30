"""Scenario archives: read an uploaded zip (YAML + stub JSON files), write one for export.

The format is Mirage's "YAML format": ``<scenario>.yaml`` holds
``recording: {scenario, session, stubs: [{file}]}`` and every ``*.json`` entry is
one stub. Upload ignores the ``stubs:`` list (as Mirage does): every JSON entry
is a stub, taken in natural name order (``stub_2`` before ``stub_10``).

Pure code: bytes in, plain values out; nothing is extracted to disk. An archive
comes from the network, so everything about it is bounded before it is read:
the number of entries, the unpacked size (from the zip headers, and again while
reading, since headers can lie), the size of each entry and its compression
ratio. Entry names that try to escape (absolute, ``..``), links and encrypted
entries are refused. The YAML's aliases are counted before they are expanded (a
"billion laughs" of a few hundred bytes would otherwise build gigabytes), and messages
quote names and values shortened (``shown``).
"""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from simulacra.background import Steps, drain
from simulacra.errors import DomainError, Invalid, TooLarge, shown
from simulacra.virtual.model import Stub

MiB = 1024 * 1024
DEFAULT_SCENARIO = "default_scenario"  # Mirage's defaults when the YAML names none
DEFAULT_SESSION = "default_session"
_CHUNK = 64 * 1024
# Values the YAML may stand for once its aliases are expanded: its ``stubs:`` list names
# at most ``max_entries`` files, a few values each.
MAX_YAML_VALUES = 100_000


class NotAnArchive(DomainError):
    """The upload is not a zip archive (Mirage answers 415)."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on one uploaded archive; the request body limit bounds the packed size."""

    max_entries: int = 10_000
    max_unpacked_bytes: int = 100 * MiB  # all entries together
    max_entry_bytes: int = 10 * MiB  # one stub file: no bigger than a PUT body may be
    max_config_bytes: int = 1 * MiB  # the YAML file only names things
    # A zip bomb packs gigabytes into kilobytes; ordinary JSON packs 5-30x. The ratio is
    # only checked above ``ratio_floor_bytes``, where a bomb could start to hurt.
    max_ratio: int = 200
    ratio_floor_bytes: int = 1 * MiB


@dataclass(frozen=True)
class ArchiveContent:
    """What one archive holds: names from its YAML and its stub documents, in order."""

    source: str  # the uploaded file's name, for messages
    scenario: str  # as written in the YAML: ``name`` or ``host:name``
    session: str
    stubs: list[tuple[str, Any]]  # (entry name, parsed JSON document)


def short_name(name: str) -> str:
    """A file name for a message: as is when short and printable, else ``shown``."""
    return name if len(name) <= 80 and name.isprintable() else shown(name)


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _unsafe_name(name: str) -> str | None:
    """Why an entry name is refused, or None. Nothing is written to disk, but a name
    that tries to escape says the archive was crafted, so it is refused, not ignored."""
    if "\x00" in name:
        return "contains a NUL character"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "climbs out of the archive with '..'"
    return None


def _is_link(info: zipfile.ZipInfo) -> bool:
    # Unix mode bits live in the high 16 bits of external_attr when the creator was Unix.
    return stat.S_ISLNK(info.external_attr >> 16)


def _basename(name: str) -> str:
    return re.split(r"[/\\]", name)[-1]


def _ignored(name: str) -> bool:
    """macOS Finder adds ``__MACOSX/._stub_0.json`` resource forks and ``.DS_Store``."""
    parts = re.split(r"[/\\]", name)
    return "__MACOSX" in parts or _basename(name).startswith(".")


class _Reader:
    def __init__(self, zf: zipfile.ZipFile, source: str, limits: ArchiveLimits) -> None:
        self.zf = zf
        self.source = source
        self.limits = limits
        self.budget = limits.max_unpacked_bytes

    def read(self, info: zipfile.ZipInfo, cap: int) -> bytes:
        """The entry's bytes, counting them as they come: a forged header must not let
        more than ``cap`` (or the archive's remaining budget) into memory."""
        where = f"{self.source}: {short_name(info.filename)}"
        chunks: list[bytes] = []
        size = 0
        try:
            with self.zf.open(info) as stream:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if size > info.file_size:
                        raise Invalid(f"{where} unpacks to more than its header declares")
                    if size > cap:
                        raise TooLarge(f"{where} is over the {cap} byte limit for one entry")
                    if size > self.budget:
                        raise TooLarge(self._over_total())
                    chunks.append(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise Invalid(f"{where} cannot be read, the archive is damaged: {exc}") from None
        except NotImplementedError as exc:  # e.g. a compression method zipfile lacks
            raise Invalid(f"{where} cannot be read: {exc}") from None
        self.budget -= size
        return b"".join(chunks)

    def _over_total(self) -> str:
        return (
            f"{self.source} unpacks to more than {self.limits.max_unpacked_bytes} bytes;"
            " split it into several archives"
        )


def _open(data: bytes, source: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
        raise NotAnArchive(
            f"{source} is not a zip archive; only .zip archives are accepted"
        ) from None


def _check_entries(infos: list[zipfile.ZipInfo], source: str, limits: ArchiveLimits) -> None:
    """Refuse from the headers alone, before a single entry is unpacked."""
    if len(infos) > limits.max_entries:
        raise TooLarge(
            f"{source} has {len(infos)} entries; at most {limits.max_entries} are accepted"
        )
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_unpacked_bytes:
        raise TooLarge(
            f"{source} unpacks to {declared} bytes; at most {limits.max_unpacked_bytes}"
            " are accepted: split it into several archives"
        )
    for info in infos:
        where = f"{source}: entry {shown(info.filename)}"
        reason = _unsafe_name(info.filename)
        if reason:
            raise Invalid(f"{where} {reason}; entries must be plain file names")
        if _is_link(info):
            raise Invalid(f"{where} is a symbolic link; only plain files are accepted")
        if info.flag_bits & 0x1:
            raise Invalid(f"{where} is encrypted; encrypted archives are not accepted")
        if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise TooLarge(
                f"{where} is compressed more than {limits.max_ratio}:1"
                f" ({info.compress_size} bytes unpack to {info.file_size}); refused as a"
                " possible zip bomb"
            )


def _parse_config(raw: bytes, where: str) -> tuple[str, str]:
    fail = f"Configuration file {where} found, however failed to read it"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"{fail}: it is not UTF-8 text") from None
    try:
        # CSafeLoader builds plain data only: no Python objects, no code. The document is
        # composed first (an alias is the node it names, shared) and measured, then built.
        loader = yaml.CSafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_size(node) > MAX_YAML_VALUES:
                raise Invalid(
                    f"{fail}: its aliases expand it to more than {MAX_YAML_VALUES} values"
                )
            config = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, RecursionError) as exc:
        raise Invalid(f"{fail}: {str(exc)[:500]}") from None
    recording = config.get("recording") if isinstance(config, dict) else None
    if not isinstance(recording, dict):
        raise Invalid(f"{fail}: it must hold 'recording: {{scenario: ..., session: ...}}'")
    scenario = _name(recording.get("scenario", DEFAULT_SCENARIO), "scenario", fail)
    session = _name(recording.get("session", DEFAULT_SESSION), "session", fail)
    return scenario, session


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document stands for, aliases expanded, counted without expanding
    them: each node once (an alias is the same node object), a shared one for each use.
    Sizes stop at just over the bound, so a billion laughs is a few small integers."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # being counted: met again below itself means a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, counted_children = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if counted_children:
            total = 1 + sum(sizes[id(child)] for child in children)
            sizes[key] = min(total, MAX_YAML_VALUES + 1)
            open_nodes.discard(key)
            continue
        if key in open_nodes:
            return MAX_YAML_VALUES + 1  # a value that contains itself never ends
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _name(value: object, kind: str, fail: str) -> str:
    # YAML reads ``scenario: 123`` as a number; a name of digits is still a legal name.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise Invalid(f"{fail}: recording.{kind} must be a name, got {shown(value)}")
    return value


def read_archive(data: bytes, source: str, limits: ArchiveLimits | None = None) -> ArchiveContent:
    """Read one uploaded archive; raise ``NotAnArchive``, ``Invalid`` or ``TooLarge``.

    Exactly one ``.yaml`` (or ``.yml``) file names the scenario and session; every
    ``.json`` file is a stub document (parsed, not yet validated); other files are
    ignored. Entries may sit in folders (zipping a folder does that); only their
    names matter.
    """
    limits = limits or ArchiveLimits()
    source = short_name(source)  # it starts every message
    with _open(data, source) as zf:
        infos = zf.infolist()
        _check_entries(infos, source, limits)
        files = [i for i in infos if not i.is_dir() and not _ignored(i.filename)]
        configs = [i for i in files if i.filename.lower().endswith((".yaml", ".yml"))]
        stub_files = sorted(
            (i for i in files if i.filename.lower().endswith(".json")),
            key=lambda i: _natural_key(i.filename),
        )
        if not configs:
            raise Invalid(
                f"{source}: Configuration file not found: the archive needs a .yaml file with"
                " 'recording: {scenario: ..., session: ...}'"
            )
        if len(configs) > 1:
            names = shown([i.filename for i in configs])
            raise Invalid(f"{source}: several configuration files ({names}); keep exactly one")
        reader = _Reader(zf, source, limits)
        config = configs[0]
        scenario, session = _parse_config(
            reader.read(config, limits.max_config_bytes), f"{source}: {short_name(config.filename)}"
        )
        stubs = []
        for info in stub_files:
            raw = reader.read(info, limits.max_entry_bytes)
            try:
                stubs.append((info.filename, orjson.loads(raw)))
            except orjson.JSONDecodeError as exc:
                raise Invalid(
                    f"{source}: {short_name(info.filename)} is not valid JSON: {exc}"
                ) from None
    return ArchiveContent(source, scenario, session, stubs)


def write_archive(scenario: str, session: str, stubs: Iterable[Stub]) -> bytes:
    """An archive that ``read_archive`` reads back into the same stubs (``archive_steps``
    at once)."""
    return drain(archive_steps(scenario, session, list(stubs)))


def archive_steps(scenario: str, session: str, stubs: list[Stub]) -> Steps[bytes]:
    """``write_archive`` in steps of a few dozen stubs (background.py): 100,000 take
    seconds to compress.

    ``scenario`` and ``session`` are the names written into the YAML. Each stub's
    document keeps its whole response sequence (a list body, plus ``responses``
    when statuses or headers differ), so a stateful stub plays the same after upload.
    """
    files = [f"stub_{i}.json" for i in range(len(stubs))]
    head = {"recording": {"scenario": scenario, "session": session}}
    text = yaml.dump(head, Dumper=yaml.CSafeDumper, default_flow_style=False, sort_keys=False)
    # The list of files as PyYAML writes it, without PyYAML: it took 1.2 s for 100,000.
    listed = "".join(f"  - file: {name}\n" for name in files)
    text += f"  stubs:\n{listed}" if files else "  stubs: []\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{scenario.rpartition(':')[2]}.yaml", text)
        for i, (name, stub) in enumerate(zip(files, stubs, strict=True)):
            zf.writestr(name, orjson.dumps(stub.document(), option=orjson.OPT_INDENT_2))
            if i % 50 == 49:
                yield
    return buffer.getvalue()
