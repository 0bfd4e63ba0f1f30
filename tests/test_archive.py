"""Unit tests for simulacra.virtual.archive: reading uploads (with their limits) and
writing exports that read back into the same stubs."""

from __future__ import annotations

import io
import os
import time
import zipfile

import pytest
import yaml

from simulacra.background import drain
from simulacra.errors import Invalid, TooLarge
from simulacra.virtual.archive import (
    ArchiveContent,
    ArchiveLimits,
    NotAnArchive,
    _Reader,
    read_archive,
    write_archive,
)
from simulacra.virtual.model import Response, Stub
from simulacra.virtual.service import archive_stubs
from tests.zip_helpers import config, make_zip


def build(content: ArchiveContent, scenario: str, recorded: str) -> list[Stub]:
    return drain(archive_stubs(content, scenario, recorded))


STUB = {"request": {"bodyPatterns": {"contains": ["a"]}}, "response": {"body": "A"}}


def stub_doc(pattern: str, body: object = "x", **extra: object) -> dict[str, object]:
    return {
        "request": {"bodyPatterns": {"contains": [pattern]}},
        "response": {"body": body},
        **extra,
    }


class TestRead:
    def test_yaml_names_and_every_json_is_a_stub_in_natural_order(self):
        entries = {"s.yaml": config("scen", "sess", files=["stub_0.json"])}
        for i in (10, 2, 0, 1):  # zip order differs from name order on purpose
            entries[f"stub_{i}.json"] = stub_doc(f"p{i}")
        content = read_archive(make_zip(entries), "up.zip")
        assert (content.source, content.scenario, content.session) == ("up.zip", "scen", "sess")
        # stubs: lists only stub_0.json; every .json is read anyway (Mirage ignores the list).
        assert [name for name, _ in content.stubs] == [
            "stub_0.json",
            "stub_1.json",
            "stub_2.json",
            "stub_10.json",
        ]
        assert content.stubs[3][1] == stub_doc("p10")

    def test_other_files_folders_and_macos_resource_forks_are_ignored(self):
        data = make_zip(
            {
                "scen/": b"",
                "scen/scen.yaml": config("scen", "sess"),
                "scen/stub_0.json": STUB,
                "scen/README.txt": "not a stub",
                "__MACOSX/scen/._stub_0.json": b"\x00\x05\x16\x07 not json",
                "scen/.DS_Store": b"\x00\x00",
            }
        )
        content = read_archive(data, "folder.zip")
        assert [name for name, _ in content.stubs] == ["scen/stub_0.json"]

    def test_missing_names_default_as_in_mirage_and_numbers_are_names(self):
        content = read_archive(make_zip({"c.yaml": "recording: {}\n"}), "z")
        assert (content.scenario, content.session) == ("default_scenario", "default_session")
        content = read_archive(make_zip({"c.yml": "recording: {scenario: 123, session: 7}"}), "z")
        assert (content.scenario, content.session) == ("123", "7")

    @pytest.mark.parametrize(
        "data", [b"", b"not a zip at all", b"PK\x03\x04garbage", b"\x00" * 100]
    )
    def test_not_a_zip(self, data):
        with pytest.raises(NotAnArchive, match="not a zip archive"):
            read_archive(data, "bad.zip")

    def test_configuration_file_not_found(self):
        with pytest.raises(Invalid, match="Configuration file not found"):
            read_archive(make_zip({"stub_0.json": STUB}), "z.zip")

    def test_several_configuration_files(self):
        data = make_zip({"a.yaml": config("a", "b"), "b.yaml": config("c", "d")})
        with pytest.raises(Invalid, match="several configuration files"):
            read_archive(data, "z.zip")

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("recording: [unclosed", "failed to read it"),
            ("- just\n- a list\n", "recording: {scenario"),
            ("recording: scenario_x\n", "recording: {scenario"),
            ("recording:\n  scenario: [a, b]\n", "recording.scenario must be a name"),
            ("recording:\n  session: ''\n", "recording.session must be a name"),
            (b"recording: {scenario: \xff}", "not UTF-8"),
            ("[" * 20000 + "]" * 20000, "failed to read it"),
        ],
    )
    def test_unreadable_configuration(self, text, reason):
        with pytest.raises(Invalid, match="failed to read it") as exc:
            read_archive(make_zip({"c.yaml": text}), "z.zip")
        assert reason in exc.value.message

    def test_yaml_python_tags_are_data_errors_never_code(self, tmp_path):
        target = tmp_path / "pwned"
        text = f"recording: !!python/object/apply:os.system ['touch {target}']\n"
        with pytest.raises(Invalid, match="failed to read it"):
            read_archive(make_zip({"c.yaml": text}), "z.zip")
        assert not target.exists()

    def test_invalid_json_names_the_file(self):
        data = make_zip({"c.yaml": config("a", "b"), "stub_3.json": "{not json"})
        with pytest.raises(Invalid, match=r"z\.zip: stub_3\.json is not valid JSON"):
            read_archive(data, "z.zip")


class TestLimits:
    def test_entry_count(self):
        entries = {"c.yaml": config("a", "b")} | {f"{i}.txt": "" for i in range(10)}
        limits = ArchiveLimits(max_entries=10)
        with pytest.raises(TooLarge, match="11 entries; at most 10"):
            read_archive(make_zip(entries), "z.zip", limits)
        read_archive(make_zip(entries), "z.zip", ArchiveLimits(max_entries=11))

    def test_total_unpacked_size_from_the_headers(self):
        data = make_zip({"c.yaml": config("a", "b"), "big.txt": b"x" * 5000})
        with pytest.raises(TooLarge, match="unpacks to"):
            read_archive(data, "z.zip", ArchiveLimits(max_unpacked_bytes=4000))

    def test_total_is_enforced_while_reading_too(self):
        # Headers are checked first; the reader counts again in case they lie.
        data = make_zip({"c.yaml": config("a", "b"), "stub_0.json": STUB})
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            reader = _Reader(zf, "z.zip", ArchiveLimits(max_unpacked_bytes=10))
            with pytest.raises(TooLarge, match="unpacks to more than 10 bytes"):
                reader.read(zf.getinfo("stub_0.json"), cap=1000)

    def test_one_entry_over_its_cap(self):
        data = make_zip({"c.yaml": config("a", "b"), "stub_0.json": b" " * 3000 + b"{}"})
        with pytest.raises(TooLarge, match="over the 2000 byte limit for one entry"):
            read_archive(data, "z.zip", ArchiveLimits(max_entry_bytes=2000))

    def test_config_file_is_small(self):
        text = config("a", "b") + "#" * 3000
        with pytest.raises(TooLarge, match="over the 1000 byte limit"):
            read_archive(make_zip({"c.yaml": text}), "z.zip", ArchiveLimits(max_config_bytes=1000))

    def test_compression_ratio_guard(self):
        bomb = make_zip({"c.yaml": config("a", "b"), "stub_0.json": b"0" * (2 * 1024 * 1024)})
        with pytest.raises(TooLarge, match="possible zip bomb"):
            read_archive(bomb, "bomb.zip")
        # The same bytes stored uncompressed are fine (ratio 1): only the ratio is refused.
        stored = make_zip(
            {"c.yaml": config("a", "b"), "x.txt": b"0" * (2 * 1024 * 1024)}, zipfile.ZIP_STORED
        )
        assert read_archive(stored, "ok.zip").stubs == []

    def test_forged_sizes_are_caught(self):
        data = bytearray(
            make_zip({"c.yaml": config("a", "b"), "stub_0.json": STUB}, zipfile.ZIP_STORED)
        )
        # Shrink the declared size of stub_0.json in its central directory record.
        central = data.rfind(b"PK\x01\x02")
        data[central + 24 : central + 28] = (5).to_bytes(4, "little")
        with pytest.raises((Invalid, NotAnArchive)) as exc:
            read_archive(bytes(data), "forged.zip")
        assert "forged.zip" in str(exc.value)

    @pytest.mark.parametrize(
        "name",
        ["../evil.json", "a/../../evil.json", "/etc/evil.json", "C:/evil.json", "..\\evil.json"],
    )
    def test_path_tricks_are_refused(self, name):
        data = make_zip({"c.yaml": config("a", "b"), name: STUB})
        with pytest.raises(Invalid, match="entries must be plain file names"):
            read_archive(data, "z.zip")

    def test_symbolic_links_are_refused(self):
        link = zipfile.ZipInfo("stub_0.json")
        link.external_attr = 0o120777 << 16
        data = make_zip([("c.yaml", config("a", "b")), (link, "/etc/passwd")])
        with pytest.raises(Invalid, match="symbolic link"):
            read_archive(data, "z.zip")

    def test_encrypted_entries_are_refused(self):
        data = bytearray(make_zip({"c.yaml": config("a", "b"), "stub_0.json": "{}"}))
        # zipfile cannot write encrypted entries: set the "encrypted" flag bit by hand.
        central = data.rfind(b"PK\x01\x02")
        data[central + 8] |= 0x1
        data = bytes(data)
        with pytest.raises(Invalid, match="encrypted"):
            read_archive(data, "z.zip")


class TestBuildStubs:
    def content(self, *docs: object) -> ArchiveContent:
        return ArchiveContent(
            "z.zip", "s", "t", [(f"stub_{i}.json", d) for i, d in enumerate(docs)]
        )

    def test_stubs_are_validated_as_put_stubs_are_and_errors_name_the_file(self):
        bad = {"request": {"bodyPattern": {"contains": ["x"]}}, "response": {"body": "y"}}
        with pytest.raises(Invalid, match=r"z\.zip: stub_1\.json: unknown request matcher"):
            build(self.content(STUB, bad), "h:s", "2024-01-01")
        with pytest.raises(Invalid, match=r"stub_0\.json: .*not a valid template"):
            build(self.content(stub_doc("a", "{{ oops")), "h:s", "2024-01-01")

    def test_seed_example_stub(self):
        doc = {
            "priority": 9903,
            "args": {"priority": "9903"},
            "request": {
                "bodyPatterns": {"contains": ["<tag> matcher here </tag>"]},
                "method": "POST",
            },
            "response": {
                "body": "<response> Response here </response>\n",
                "headers": {},
                "status": 200,
            },
        }
        [stub] = build(self.content(doc), "h:s", "2024-01-01")
        assert (stub.scenario, stub.priority, stub.args) == ("h:s", 9903, {"priority": "9903"})
        assert stub.responses == [Response(200, "<response> Response here </response>\n")]
        assert stub.recorded == "2024-01-01"

    def test_equal_matchers_become_one_sequence_in_file_order(self):
        stubs = build(
            self.content(stub_doc("a", "1"), stub_doc("b", "B"), stub_doc("a", ["2", "3"])),
            "h:s",
            "d",
        )
        assert [[r.body for r in s.responses] for s in stubs] == [["1", "2", "3"], ["B"]]


class TestWrite:
    def stubs(self) -> list[Stub]:
        return [
            Stub(
                "h:s",
                {"bodyPatterns": {"contains": ["a"]}, "method": "POST"},
                [Response(200, "one"), Response(503, "two", {"Retry-After": "1"}, "slow")],
                priority=3,
                args={"k": "v"},
                recorded="2024-02-03",
            ),
            Stub("h:s", {"urlPath": "/x"}, [Response(201, "{{ request.path }}")], recorded="d"),
        ]

    def test_layout_is_mirages_yaml_format(self):
        files = {}
        with zipfile.ZipFile(io.BytesIO(write_archive("s", "sess_1", self.stubs()))) as zf:
            files = {name: zf.read(name) for name in zf.namelist()}
        assert sorted(files) == ["s.yaml", "stub_0.json", "stub_1.json"]
        assert yaml.safe_load(files["s.yaml"]) == {
            "recording": {
                "scenario": "s",
                "session": "sess_1",
                "stubs": [{"file": "stub_0.json"}, {"file": "stub_1.json"}],
            }
        }

    def test_round_trip_keeps_sequences_statuses_and_templates(self):
        original = self.stubs()
        content = read_archive(write_archive("other", "t", original), "export.zip")
        assert (content.scenario, content.session) == ("other", "t")
        again = build(content, "h2:other", "today")
        assert [s.document() for s in again] == [s.document() for s in original]
        assert again[0].responses == original[0].responses

    def test_empty_scenario_round_trips(self):
        content = read_archive(write_archive("e", "t", []), "e.zip")
        assert (content.scenario, content.stubs) == ("e", [])


def test_nothing_is_extracted_to_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    read_archive(make_zip({"c.yaml": config("a", "b"), "stub_0.json": STUB}), "z.zip")
    assert os.listdir(tmp_path) == []


# Issue 14: a YAML of a few hundred bytes must not expand into gigabytes, and no message
# may quote a value whole.


def alias_bomb(depth: int, width: int = 9, where: str = "scenario") -> str:
    """A "billion laughs": each level lists the previous one ``width`` times."""
    lines = ['l0: &l0 ["lol"]']
    lines += [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, depth + 1)
    ]
    if where == "scenario":
        lines.append(f"recording: {{scenario: *l{depth}, session: s}}")
    else:  # a key upload ignores
        lines.append(f"recording: {{scenario: sc, session: s, stubs: *l{depth}}}")
    return "\n".join(lines)


class TestYamlAliases:
    @pytest.mark.parametrize("depth", [6, 7, 9, 30])
    @pytest.mark.parametrize("where", ["scenario", "stubs"])
    def test_an_alias_bomb_is_refused_before_it_expands(self, depth, where):
        data = make_zip({"c.yaml": alias_bomb(depth, where=where), "stub_0.json": STUB})
        assert len(data) < 2_000
        started = time.perf_counter()
        with pytest.raises(Invalid, match="more than 100000 values") as caught:
            read_archive(data, "z.zip")
        assert time.perf_counter() - started < 0.1
        assert len(caught.value.message) < 300

    def test_a_recursive_alias_is_refused(self):
        text = "a: &a [x, *a]\nrecording: {scenario: *a, session: s}"
        with pytest.raises(Invalid, match="more than 100000 values"):
            read_archive(make_zip({"c.yaml": text}), "z.zip")

    def test_a_bad_value_is_quoted_short(self):
        data = make_zip({"c.yaml": alias_bomb(4)})  # 6,561 values: under the bound
        with pytest.raises(Invalid, match=r"recording\.scenario must be a name") as caught:
            read_archive(data, "z.zip")
        assert len(caught.value.message) < 300

    def test_aliases_in_ordinary_use_still_work(self):
        text = "name: &n shop\nrecording: {scenario: *n, session: *n}\n"
        content = read_archive(make_zip({"c.yaml": text, "stub_0.json": STUB}), "z.zip")
        assert (content.scenario, content.session) == ("shop", "shop")

    def test_long_names_are_quoted_short(self):
        long_name = "n" * 5_000
        data = make_zip({"c.yaml": config("a", "b"), f"{long_name}.json": "{not json"})
        with pytest.raises(Invalid, match="is not valid JSON") as caught:
            read_archive(data, long_name + ".zip")
        assert len(caught.value.message) < 400
        several = make_zip({f"{long_name}{i}.yaml": config("a", "b") for i in range(50)})
        with pytest.raises(Invalid, match="several configuration files") as caught:
            read_archive(several, "z.zip")
        assert len(caught.value.message) < 400
