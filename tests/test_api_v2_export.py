"""Contract tests: GET /api/v2/scenarios/objects/{name}/export and the {"export": null}
action, through the real server. An export uploads again under another name and plays
the same, stateful sequences included."""

from __future__ import annotations

import json
import os
import re

import yaml

from tests.mirage_helpers import (
    HOST,
    action_url,
    assert_data,
    assert_error,
    begin_ok,
    contains,
    create_scenario,
    end_ok,
    list_stubs,
    play,
    playback_of,
    put_stub_ok,
    record,
    ref,
    scenario_url,
    stub,
    stubs_url,
)
from tests.zip_helpers import make_zip, read_zip, upload

STUBS = [
    # A stateful stub: three responses, the last with another status and headers.
    (stub("first", **contains("<poll/>", method="POST")), None),
    (stub("second", **contains("<poll/>", method="POST")), None),
    (
        stub(
            "done",
            status=201,
            response_headers={"X-State": "done"},
            **contains("<poll/>", method="POST"),
        ),
        None,
    ),
    (stub("low", priority=5, **contains("<item/>")), {"delay_policy": "slow"}),
    (stub("high", priority=1, **contains("<item/>", method="POST")), None),
    (stub("{{ request.path }}|{{ request.json is none }}", **contains("<tmpl/>")), None),
]


def export(http, base_url, path_name: str, **params: str):
    return http.get(scenario_url(base_url, path_name) + "/export", params=params)


def export_ok(http, base_url, path_name: str, **params: str) -> dict[str, bytes]:
    response = export(http, base_url, path_name, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    return read_zip(response.content)


def stub_documents(http, base_url, scenario: str) -> list[dict]:
    return [s["stub"] for s in list_stubs(http, base_url, scenario)]


class TestExport:
    def test_zip_and_yaml_format(self, http, base_url, name):
        record(http, base_url, name, STUBS)
        response = export(http, base_url, name)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == f'attachment; filename="{name}.zip"'
        files = read_zip(response.content)
        config = yaml.safe_load(files[f"{name}.yaml"])
        recording = config["recording"]
        assert recording["scenario"] == name
        assert re.fullmatch(rf"{name}_\d+", recording["session"])  # Mirage: name_epoch
        stub_files = [f"stub_{i}.json" for i in range(4)]
        assert recording["stubs"] == [{"file": f} for f in stub_files]
        assert sorted(files) == sorted([f"{name}.yaml", *stub_files])

    def test_stub_files_hold_the_live_stubs_with_whole_sequences(self, http, base_url, name):
        record(http, base_url, name, STUBS)
        files = export_ok(http, base_url, name)
        exported = [json.loads(files[f"stub_{i}.json"]) for i in range(4)]
        assert exported == stub_documents(http, base_url, name)
        assert exported[0]["response"]["body"] == ["first", "second", "done"]
        assert [r["status"] for r in exported[0]["responses"]] == [200, 200, 201]
        assert exported[1]["response"]["delayPolicy"] == "slow"
        assert exported[3]["response"]["body"] == "{{ request.path }}|{{ request.json is none }}"

    def test_export_is_built_from_the_current_stubs(self, http, base_url, name):
        record(http, base_url, name, [stub("old", **contains("o"))])
        assert len(export_ok(http, base_url, name)) == 2
        assert http.delete(stubs_url(base_url, name)).status_code == 200
        begin_ok(http, base_url, name, name + "_r2", "record")
        for pattern in ("a", "b"):
            put_stub_ok(http, base_url, name, name + "_r2", stub(pattern, **contains(pattern)))
        end_ok(http, base_url, name, name + "_r2")
        files = export_ok(http, base_url, name)
        assert sorted(files) == sorted([f"{name}.yaml", "stub_0.json", "stub_1.json"])
        assert b'"a"' in files["stub_0.json"]

    def test_names_in_the_yaml_can_be_chosen(self, http, base_url, name):
        record(http, base_url, name, STUBS[:1])
        files = export_ok(http, base_url, name, scenario=name + "_copy", session="s1")
        recording = yaml.safe_load(files[f"{name}_copy.yaml"])["recording"]
        assert (recording["scenario"], recording["session"]) == (name + "_copy", "s1")

    def test_empty_scenario(self, http, base_url, name):
        create_scenario(http, base_url, name)
        files = export_ok(http, base_url, name, session="s")
        assert yaml.safe_load(files[f"{name}.yaml"])["recording"]["stubs"] == []

    def test_full_name_in_the_path(self, http, base_url, name):
        record(http, base_url, name, STUBS[:1])
        assert f"{name}.yaml" in export_ok(http, base_url, f"{HOST}:{name}")

    def test_unicode_names(self, http, base_url, name):
        scenario = f"{name}_überraschung_世界"
        record(http, base_url, scenario, STUBS[:1], session=name)  # headers are Latin-1
        response = export(http, base_url, scenario, session="sitzung_ß")
        assert response.status_code == 200, response.text
        disposition = response.headers["content-disposition"]
        assert disposition == (
            f'attachment; filename="{name}__berraschung___.zip";'
            f" filename*=UTF-8''{name}_%C3%BCberraschung_%E4%B8%96%E7%95%8C.zip"
        )
        files = read_zip(response.content)
        recording = yaml.safe_load(files[f"{scenario}.yaml"])["recording"]
        assert (recording["scenario"], recording["session"]) == (scenario, "sitzung_ß")

    def test_errors(self, http, base_url, name):
        assert_error(export(http, base_url, name), 404, "not found")
        create_scenario(http, base_url, name)
        assert_error(export(http, base_url, name, session="bad session"), 400, "illegal")
        assert_error(export(http, base_url, name, scenario="a/b"), 400, "illegal")
        assert_error(http.post(scenario_url(base_url, name) + "/export"), 405)


class TestRoundTrip:
    def test_an_export_uploads_under_another_name_and_plays_the_same(self, http, base_url, name):
        session = playback_of(http, base_url, name, STUBS)
        copy = name + "_copy"
        data = export(http, base_url, name, scenario=copy, session=copy).content
        body = upload(http, base_url, data).json()
        assert (body["scenario"], body["session"], body["total"]) == (copy, copy, 4)
        assert stub_documents(http, base_url, copy) == stub_documents(http, base_url, name)
        # Both sessions play the same: the stateful sequence (statuses, headers too),
        # priorities and templates.
        for scenario, sess in [(name, session), (copy, copy)]:
            played = [play(http, base_url, scenario, sess, "<poll/>") for _ in range(4)]
            assert [(r.status_code, r.text) for r in played] == [
                (200, "first"),
                (200, "second"),
                (201, "done"),
                (201, "done"),
            ]
            assert played[2].headers["X-State"] == "done"
            assert play(http, base_url, scenario, sess, "<item/>").text == "high"
            templated = play(http, base_url, scenario, sess, "<tmpl/>").text
            assert templated == f"/api/v2/scenarios/objects/{scenario}/stubs|True"

    def test_a_renamed_yaml_is_all_a_user_needs_to_change(self, http, base_url, name):
        record(http, base_url, name, STUBS[:3])
        files = export_ok(http, base_url, name)
        config = yaml.safe_load(files.pop(f"{name}.yaml"))
        config["recording"].update(scenario=name + "_b", session=name + "_b")
        files[f"{name}_b.yaml"] = yaml.safe_dump(config).encode()
        upload(http, base_url, make_zip(files))
        played = [play(http, base_url, name + "_b", name + "_b", "<poll/>").text for _ in range(3)]
        assert played == ["first", "second", "done"]

    def test_uploading_an_export_to_its_own_name_is_422(self, http, base_url, name):
        record(http, base_url, name, STUBS[:1])
        data = export(http, base_url, name).content
        assert_error(upload(http, base_url, data), 422, "already exists")


class TestExportAction:
    def test_answers_a_link_to_the_export(self, http, base_url, name):
        record(http, base_url, name, STUBS)
        data = assert_data(http.post(action_url(base_url, name), json={"export": None}))
        url = f"{base_url}{ref(name)}/export"
        assert data == {
            "scenario": name,
            "scenarioRef": ref(name),
            "links": [url],
            "yaml_links": [[f"{name}.zip", url]],
            "command_links": [],
        }
        files = read_zip(http.get(data["links"][0]).content)
        assert f"{name}.yaml" in files

    def test_session_option_flows_into_the_link(self, http, base_url, name):
        record(http, base_url, name, STUBS[:1])
        body = {"export": None, "session": "mine", "export_dir": "ignored"}
        [link] = assert_data(http.post(action_url(base_url, name), json=body))["links"]
        assert link.endswith("/export?session=mine")
        files = read_zip(http.get(link).content)
        assert yaml.safe_load(files[f"{name}.yaml"])["recording"]["session"] == "mine"

    def test_nothing_is_written_to_the_servers_disk(self, http, base_url, name):
        record(http, base_url, name, STUBS[:1])
        before = set(os.listdir("."))
        link = assert_data(http.post(action_url(base_url, name), json={"export": None}))["links"]
        assert http.get(link[0]).status_code == 200
        assert set(os.listdir(".")) == before
        assert not os.path.exists("static") and not os.path.exists("exports")

    def test_errors(self, http, base_url, name):
        url = action_url(base_url, name)
        assert_error(http.post(url, json={"export": None}), 404, "not found")
        create_scenario(http, base_url, name)
        assert_error(http.post(url, json={"export": None, "session": "a b"}), 400, "illegal")
        assert_error(http.post(url, json={"export": None, "session": 5}), 400, "session")
        runnable = {"export": None, "runnable": True, "playback_session": "p"}
        assert_error(http.post(url, json=runnable), 400, "runnable")
