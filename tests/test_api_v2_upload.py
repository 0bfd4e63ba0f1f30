"""Contract tests: POST /api/v2/scenarios/upload through the real server: the seed's
example, the archive format, several archives at once, every error path, and that a
failed upload stores nothing and harms nothing already stored."""

from __future__ import annotations

import io
import json
import zipfile

import requests

from tests.mirage_helpers import (
    HOST,
    assert_data,
    assert_error,
    contains,
    create_scenario,
    list_stubs,
    play,
    playback_of,
    ref,
    scenario_detail,
    stub,
)
from tests.zip_helpers import UPLOAD, config, make_zip, scenario_zip, upload

# The seed's example stub, with its malformed ``"headers":`` line given a value.
SEED_STUB = {
    "priority": 9903,
    "args": {"priority": "9903"},
    "request": {
        "bodyPatterns": {"contains": ["<tag> matcher here </tag>"]},
        "method": "POST",
    },
    "response": {
        "body": "<response> Response here </response>\n",
        "headers": {"Content-Type": "text/xml"},
        "status": 200,
    },
}


# The seed's "Example upload (Python)", verbatim but for 'rb': Python 3 needs bytes.
def seed_upload(file_name, mirage_uri):
    """
    file_name - path to zip archive.
    mirage_uri - full Mirage URL (http://miragehostname:8001)
    """
    # reading file
    with open(file_name, "rb") as stream:
        # preparing data
        files = [("files", (file_name, stream, "application/zip"))]
        data = {}

        resp = requests.post(mirage_uri + "/api/v2/scenarios/upload", files=files, data=data)
        if resp.status_code == 200:
            print("Upload success!")
    return


def assert_playback_session(http, base_url, scenario: str, session: str, stubs: int) -> None:
    detail = scenario_detail(http, base_url, scenario)
    assert detail["stub_count"] == stubs
    assert [(s["name"], s["status"]) for s in detail["sessions"]] == [(session, "playback")]


class TestSeedExample:
    def test_the_seed_upload_function_works_verbatim(self, http, base_url, name, tmp_path, capsys):
        stubs = [
            SEED_STUB,
            stub("<second/>", **contains("<two/>", method="POST")),
            stub("third", **contains("three")),
            stub("fourth", **contains("four")),
            stub("fifth", **contains("five")),
        ]
        path = tmp_path / f"{name}.zip"
        path.write_bytes(scenario_zip(name, f"{name}_s", stubs))
        assert seed_upload(str(path), base_url) is None
        assert capsys.readouterr().out == "Upload success!\n"

        # The session is in playback at once: the scenario is ready for testing.
        assert_playback_session(http, base_url, name, f"{name}_s", 5)
        response = play(http, base_url, name, f"{name}_s", "<x><tag>matcher here</tag></x>")
        assert response.status_code == 200
        assert response.text == "<response> Response here </response>\n"
        assert response.headers["Content-Type"] == "text/xml"
        assert play(http, base_url, name, f"{name}_s", "<two/>").text == "<second/>"
        [first] = [s for s in list_stubs(http, base_url, name) if s["stub"]["priority"] == 9903]
        assert first["stub"]["args"] == {"priority": "9903"}

    def test_success_body_is_mirages_bare_object(self, http, base_url, name):
        response = upload(http, base_url, scenario_zip(name, "sess_" + name, [SEED_STUB]))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "scenario": name,
            "session": "sess_" + name,
            "total": 1,
            "name": f"{HOST}:{name}",
            "stub_count": 1,
            "scenarioRef": ref(name),
        }

    def test_the_stubs_list_of_an_exported_yaml_is_ignored(self, http, base_url, name):
        # Mirage's own exports list their files under stubs:; every .json counts anyway.
        entries = {
            f"{name}.yaml": config(name, name, files=["stub_0.json", "missing.json"]),
            "stub_0.json": stub("zero", **contains("0")),
            "stub_1.json": stub("one", **contains("1")),
        }
        assert upload(http, base_url, make_zip(entries)).json()["total"] == 2
        assert play(http, base_url, name, name, "1").text == "one"


class TestFormat:
    def test_stubs_are_inserted_in_natural_file_order(self, http, base_url, name):
        # Equal priorities: the earlier file wins, and stub_2 comes before stub_10.
        entries: dict = {f"{name}.yaml": config(name, name)}
        for i in (10, 2):
            entries[f"stub_{i}.json"] = stub(f"from {i}", priority=1, **contains("x"))
        upload(http, base_url, make_zip(entries))
        assert play(http, base_url, name, name, "x").text == "from 2"

    def test_stateful_sequences_play_in_order_and_the_last_repeats(self, http, base_url, name):
        entries = {
            f"{name}.yaml": config(name, name),
            "stub_0.json": stub(["one", "two"], **contains("a")),
            "stub_1.json": stub("three", **contains("a")),  # same matchers: appended
        }
        assert upload(http, base_url, make_zip(entries)).json()["stub_count"] == 1
        played = [play(http, base_url, name, name, "a").text for _ in range(4)]
        assert played == ["one", "two", "three", "three"]

    def test_a_zipped_folder_works_and_resource_forks_are_ignored(self, http, base_url, name):
        entries = {
            f"{name}/": b"",
            f"{name}/{name}.yaml": config(name, name),
            f"{name}/stub_0.json": stub("ok", **contains("k")),
            f"__MACOSX/{name}/._stub_0.json": b"\x00\x05\x16\x07binary",
        }
        assert upload(http, base_url, make_zip(entries)).status_code == 200
        assert play(http, base_url, name, name, "k").text == "ok"

    def test_host_in_the_yaml_names_the_namespace(self, http, base_url, name):
        data = scenario_zip(f"other.example:{name}", name, [stub("x", **contains("x"))])
        body = upload(http, base_url, data).json()
        assert body["name"] == f"other.example:{name}"
        detail = http.get(f"{base_url}/api/v2/scenarios/objects/other.example:{name}")
        assert detail.status_code == 200
        assert detail.json()["sessions"][0]["status"] == "playback"

    def test_an_archive_without_stubs_creates_the_scenario_and_no_session(
        self, http, base_url, name
    ):
        body = upload(http, base_url, make_zip({f"{name}.yaml": config(name, name)})).json()
        assert (body["total"], body["stub_count"]) == (0, 0)
        assert "not begun" in body["status"][0]
        assert scenario_detail(http, base_url, name)["sessions"] == []

    def test_part_content_types_clients_send_for_zips(self, http, base_url, name):
        for i, content_type in enumerate(
            ["application/x-zip-compressed", "application/octet-stream"]
        ):
            data = scenario_zip(f"{name}{i}", f"{name}{i}", [stub("z", **contains("z"))])
            assert upload(http, base_url, (f"{i}.zip", data, content_type)).status_code == 200


class TestSeveralArchives:
    def test_all_are_imported_and_the_answer_lists_each(self, http, base_url, name):
        first = scenario_zip(f"{name}_a", f"{name}_a", [stub("A", **contains("a"))])
        second = scenario_zip(f"{name}_b", f"{name}_b", [stub("B", **contains("b"))])
        data = assert_data(upload(http, base_url, first, second))
        assert [(d["scenario"], d["session"], d["total"]) for d in data] == [
            (f"{name}_a", f"{name}_a", 1),
            (f"{name}_b", f"{name}_b", 1),
        ]
        assert play(http, base_url, f"{name}_a", f"{name}_a", "a").text == "A"
        assert play(http, base_url, f"{name}_b", f"{name}_b", "b").text == "B"

    def test_one_bad_archive_stores_none_of_them(self, http, base_url, name):
        good = scenario_zip(f"{name}_ok", f"{name}_ok", [stub("A", **contains("a"))])
        bad = scenario_zip(f"{name}_bad", f"{name}_bad", [{"request": {}, "respons": {}}])
        assert_error(upload(http, base_url, good, bad), 400, "a1.zip: stub_0.json")
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}_ok").status_code == 404

    def test_the_same_scenario_twice_in_one_upload_is_422(self, http, base_url, name):
        data = scenario_zip(name, name, [stub("A", **contains("a"))])
        other = scenario_zip(name, name + "2", [stub("A", **contains("a"))])
        assert_error(upload(http, base_url, data, other), 422, "already exists")
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}").status_code == 404

    def test_the_same_session_twice_in_one_upload_is_400(self, http, base_url, name):
        one = scenario_zip(f"{name}_1", name, [stub("A", **contains("a"))])
        two = scenario_zip(f"{name}_2", name, [stub("A", **contains("a"))])
        assert_error(upload(http, base_url, one, two), 400, f"Session {name}")


class TestErrors:
    def test_422_when_the_scenario_exists_and_it_is_left_intact(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("original", **contains("o"))])
        data = scenario_zip(name, "another", [stub("replacement", **contains("o"))])
        assert_error(upload(http, base_url, data), 422, f"Scenario {HOST}:{name} already exists")
        assert play(http, base_url, name, session, "o").text == "original"
        assert len(list_stubs(http, base_url, name)) == 1
        detail = scenario_detail(http, base_url, name)
        assert sorted((s["name"], s["status"]) for s in detail["sessions"]) == [
            (f"{name}_play", "playback"),
            (f"{name}_rec", "dormant"),
        ]

    def test_400_when_the_session_belongs_to_another_scenario(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("x", **contains("x"))])
        data = scenario_zip(name + "_new", session, [stub("y", **contains("y"))])
        assert_error(upload(http, base_url, data), 400, f"Session {session} already belongs")
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}_new").status_code == 404

    def test_415_when_the_request_is_not_multipart(self, http, base_url):
        response = http.post(base_url + UPLOAD, json={"scenario": "x"})
        assert_error(response, 415, "not supported")
        zipped = scenario_zip("x", "y", [])
        raw = http.post(base_url + UPLOAD, data=zipped, headers={"Content-Type": "application/zip"})
        assert_error(raw, 415, "multipart/form-data")

    def test_415_when_a_part_is_not_a_zip(self, http, base_url, name):
        text = (f"{name}.txt", b"hello", "text/plain")
        assert_error(upload(http, base_url, text), 415, "text/plain not supported")
        garbage = (f"{name}.zip", b"PK\x03\x04 but not really", "application/zip")
        assert_error(upload(http, base_url, garbage), 415, f"{name}.zip is not a zip archive")
        tarball = (f"{name}.tar.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 50, "application/gzip")
        assert_error(upload(http, base_url, tarball), 415)

    def test_400_when_the_yaml_is_missing_or_unreadable(self, http, base_url, name):
        no_yaml = make_zip({"stub_0.json": stub("x")})
        assert_error(upload(http, base_url, no_yaml), 400, "Configuration file not found")
        for text in ["recording: [oops", "recording: 3", "just text", "recording:\n  scenario: {}"]:
            bad = make_zip({"x.yaml": text, "stub_0.json": stub("x")})
            assert_error(upload(http, base_url, bad), 400, "failed to read it")

    def test_400_for_illegal_names_in_the_yaml(self, http, base_url, name):
        for scenario, session in [("has space", "s"), (name, "bad/session"), ("a/b:c", "s")]:
            data = make_zip({"x.yaml": config(json.dumps(scenario), session)})
            assert_error(upload(http, base_url, data), 400, "a0.zip")

    def test_400_for_a_bad_stub_naming_the_file(self, http, base_url, name):
        entries = {"x.yaml": config(name, name), "stub_0.json": stub("fine")}
        for bad, reason in [
            ("{not json", "stub_1.json is not valid JSON"),
            (json.dumps(["a", "list"]), "stub_1.json: a stub must be a JSON object"),
            (json.dumps(stub("x", bodyPattern={"contains": ["x"]})), "unknown request matcher"),
            (json.dumps(stub("{{ unclosed", **contains("t"))), "not a valid template"),
            (json.dumps(stub("x", status=999)), "response.status"),
        ]:
            data = make_zip({**entries, "stub_1.json": bad})
            assert_error(upload(http, base_url, data), 400, reason)
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}").status_code == 404

    def test_400_when_there_is_no_file_part(self, http, base_url):
        response = http.post(base_url + UPLOAD, files={"field": (None, "just a value")})
        assert_error(response, 400, "no archive in the upload")

    def test_400_for_a_malformed_or_truncated_multipart_body(self, http, base_url, name):
        prepared = requests.Request(
            "POST", base_url + UPLOAD, files=[("files", ("a.zip", scenario_zip(name, name, [])))]
        ).prepare()
        body = prepared.body
        assert isinstance(body, bytes)
        headers = {"Content-Type": prepared.headers["Content-Type"]}
        truncated = http.post(base_url + UPLOAD, data=body[:-20], headers=headers)
        assert_error(truncated, 400, "multipart body")
        nonsense = http.post(base_url + UPLOAD, data=b"no boundary here", headers=headers)
        assert_error(nonsense, 400, "multipart body")
        no_boundary = http.post(
            base_url + UPLOAD, data=body, headers={"Content-Type": "multipart/form-data"}
        )
        assert_error(no_boundary, 400, "boundary")
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}").status_code == 404

    def test_400_for_too_many_parts(self, http, base_url, name):
        files = [("files", (f"{i}.zip", b"", "application/zip")) for i in range(101)]
        response = http.post(base_url + UPLOAD, files=files)
        assert_error(response, 400, "too many parts")

    def test_413_when_the_upload_is_over_the_body_limit(self, http, base_url, name):
        padding = (name + ".zip", b"\x00" * (10 * 1024 * 1024 + 1), "application/zip")
        assert_error(upload(http, base_url, padding), 413)

    def test_405_for_other_methods(self, http, base_url):
        assert_error(http.get(base_url + UPLOAD), 405)
        assert_error(http.put(base_url + UPLOAD), 405)


class TestHostileArchives:
    def test_too_many_entries(self, http, base_url, name):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("x.yaml", config(name, name))
            for i in range(10_000):
                zf.writestr(f"{i}", b"")
        assert_error(upload(http, base_url, buffer.getvalue()), 413, "10001 entries")
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}").status_code == 404

    def test_zip_bomb_by_declared_size(self, http, base_url, name):
        # ~100 KiB on the wire, 110 MiB unpacked.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("x.yaml", config(name, name))
            for i in range(11):
                zf.writestr(f"stub_{i}.json", b"0" * (10 * 1024 * 1024))
        assert len(buffer.getvalue()) < 1024 * 1024
        assert_error(upload(http, base_url, buffer.getvalue()), 413, "unpacks to")

    def test_zip_bomb_by_ratio(self, http, base_url, name):
        data = make_zip({"x.yaml": config(name, name), "stub_0.json": b" " * 5_000_000 + b"{}"})
        assert_error(upload(http, base_url, data), 413, "possible zip bomb")

    def test_path_tricks(self, http, base_url, name):
        for entry in ["../stub_0.json", "/tmp/stub_0.json", "a/../../stub_0.json"]:
            data = make_zip({"x.yaml": config(name, name), entry: stub("x")})
            assert_error(upload(http, base_url, data), 400, "plain file names")
        link = zipfile.ZipInfo("stub_0.json")
        link.external_attr = 0o120777 << 16
        data = make_zip([("x.yaml", config(name, name)), (link, "/etc/passwd")])
        assert_error(upload(http, base_url, data), 400, "symbolic link")
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}").status_code == 404

    def test_the_server_stays_healthy(self, http, base_url, name):
        create_scenario(http, base_url, name)
        assert http.get(base_url + "/api/v2/scenarios").status_code == 200
        assert http.get(f"{base_url}/api/v2/scenarios/objects/{name}").status_code == 200
