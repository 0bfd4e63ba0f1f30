"""Acceptance: the seeds' own examples work verbatim against ``simulacra serve``.

Project rule: every curl command in ``../shared/reference/mimic-readme.txt`` and every
request in ``../shared/reference/mirage-api-v2.txt`` (the Python upload snippet included,
its file opened in binary mode as Python 3 needs) must work verbatim. The commands and
request bodies are kept here as literals, so this runs on a clone without ``../shared``;
when the reference files are there, the drift tests check that the literals still are what
they say.

Mimic README: the 4 curl command lines run through ``bash`` (only ``http://localhost:8900``
replaced by the test server's URL), the ``keystone ... catalog`` command through its
successor, and the two JSON request bodies (a server that stays in BUILD, a load balancer
that goes PENDING-UPDATE) with every preset the README's lists describe.

Mirage API v2: every request the spec shows, in its order, with its example bodies and
headers, asserting the status codes and the shape of its example outputs. The spec's names
(``scenario_name``, ``scenario_x``, ``playback_28``...) are used literally; each test
removes what it created, so the literal names can be used again by the next test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.mirage_helpers import (
    DATE_RE,
    HOST,
    TIMESTAMP_RE,
    action_url,
    assert_data,
    assert_error,
    scenario_url,
    stubs_url,
)
from tests.test_api_v2_upload import SEED_STUB, seed_upload
from tests.zip_helpers import make_zip

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
MIMIC_README = REFERENCE / "mimic-readme.txt"
MIRAGE_SPEC = REFERENCE / "mirage-api-v2.txt"
README_URL = "http://localhost:8900"

# ---------------------------------------------------------------------------------------
# Mimic README
# ---------------------------------------------------------------------------------------

# Every line of mimic-readme.txt that starts with ``curl``, verbatim and in order.
MIMIC_CURL_COMMANDS = [
    "curl http://localhost:8900",
    "curl -s -XPOST -d "
    """'{"auth":{"RAX-KSKEY:apiKeyCredentials":{"username":"mimic","apiKey":"12345"}}}' """
    "http://localhost:8900/identity/v2.0/tokens | python -m json.tool",
    """curl -s -XPOST -d '{"amount": 1.0}' http://localhost:8900/mimic/v1.1/tick """
    "| python -m json.tool",
    """curl -s -XPOST -d '{"amount": '"$(date +%s)"'}' http://localhost:8900/mimic/v1.1/tick """
    "| python -m json.tool",
]
WELCOME, TOKENS, TICK, TICK_TO_NOW = MIMIC_CURL_COMMANDS

# The README's other command line: the keystone CLI, which python-keystoneclient dropped in
# 3.0 (2016). Its successor, the openstack CLI, takes the same --os-* options.
KEYSTONE_COMMAND = (
    "keystone --os-username mimic --os-password 1235 "
    "--os-auth-url http://localhost:8900/identity/v2.0/ catalog"
)

# The README's two request bodies, verbatim (the server body keeps its odd indentation).
README_SERVER_BODY = """{
    "server" : {
        "name" : "api-test-server-1",
        "imageRef" : "3afe97b2-26dc-49c5-a2cc-a2fc8d80c001",
        "flavorRef" : "2",
        "metadata": {"server_building": 120}
    }
 }"""
README_LB_BODY = (
    '{"loadBalancer": {"name": "a-new-loadbalancer2", "protocol": "HTTP", "virtualIps": '
    '[{"type": "PUBLIC"}], "metadata": [{"key": "lb_pending_update", "value": 20}], '
    '"nodes": []}}'
)

ISO_NOW_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def curl(command: str, base_url: str) -> subprocess.CompletedProcess[str]:
    """Run a README command line with bash, the test server in place of localhost:8900."""
    assert README_URL in command
    env = dict(os.environ)
    # ``python -m json.tool`` must find a python: this interpreter's directory comes first.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command.replace(README_URL, base_url)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (command, done.returncode, done.stdout, done.stderr)
    return done


def json_tool_output(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a ``| python -m json.tool`` pipe printed, checking that json.tool printed it."""
    document = json.loads(done.stdout)
    assert done.stdout == json.dumps(document, indent=4) + "\n"
    return document


def parse_now(now: str) -> datetime:
    assert ISO_NOW_RE.match(now), now
    return datetime.strptime(now, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def clock_now(http: requests.Session, base_url: str) -> datetime:
    response = http.post(base_url + "/mimic/v1.1/tick", json={"amount": 0})
    assert response.status_code == 200, response.text
    return parse_now(response.json()["now"])


def readme_lines(prefix: str) -> list[str]:
    if not MIMIC_README.exists():
        pytest.skip(f"{MIMIC_README} is absent (a clone without ../shared): nothing to compare")
    lines = MIMIC_README.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip().startswith(prefix)]


class TestMimicReadmeCommands:
    def test_the_literals_are_the_readmes_curl_lines(self):
        assert readme_lines("curl ") == MIMIC_CURL_COMMANDS

    def test_the_keystone_literal_is_the_readmes(self):
        assert readme_lines("keystone ") == [KEYSTONE_COMMAND]

    def test_welcome(self, base_url):
        done = curl(WELCOME, base_url)
        # The README: ">> To get started with Mimic, POST an authentication request to:
        # >> /identity/v2.0/tokens" (our text goes on to name the Mirage API too).
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        assert lines[:2] == [
            "To get started with Mimic, POST an authentication request to:",
            "/identity/v2.0/tokens",
        ]

    def test_token_request_shows_the_service_catalog(self, base_url):
        access = json_tool_output(curl(TOKENS, base_url))["access"]
        assert access["token"]["id"].startswith("token_")
        assert access["token"]["tenant"]["id"]
        assert access["user"]["name"] == "mimic"
        assert access["token"]["RAX-AUTH:authenticatedBy"] == ["APIKEY"]
        catalog = {entry["name"]: entry for entry in access["serviceCatalog"]}
        # "links to compute and load balancer links within mimic"
        assert catalog["cloudServersOpenStack"]["type"] == "compute"
        assert catalog["cloudLoadBalancers"]["type"] == "rax:load-balancer"
        for entry in catalog.values():
            assert entry["endpoints"], entry
            for endpoint in entry["endpoints"]:
                assert endpoint["publicURL"].startswith(base_url + "/mimicking/"), endpoint
                assert endpoint["tenantId"] == access["token"]["tenant"]["id"]

    def test_tick(self, http, base_url):
        before = clock_now(http, base_url)
        answer = json_tool_output(curl(TICK, base_url))
        # The README: {"advanced": 1.0, "now": "1970-01-01T00:00:04.000000Z"} ("output like
        # this": where the clock stands depends on the ticks before).
        assert set(answer) == {"advanced", "now"}
        assert answer["advanced"] == 1.0
        assert parse_now(answer["now"]) == before + timedelta(seconds=1)

    def test_tick_to_the_present(self, http, base_url):
        before = clock_now(http, base_url)
        start = int(time.time())
        answer = json_tool_output(curl(TICK_TO_NOW, base_url))
        end = int(time.time())
        # ``date +%s`` ran between start and end; the clock moved by exactly that much.
        assert start <= answer["advanced"] <= end
        assert answer["advanced"] == int(answer["advanced"])
        now = parse_now(answer["now"])
        assert now == before + timedelta(seconds=answer["advanced"])
        assert now >= datetime.fromtimestamp(start, UTC)  # "something resembling the present"

    def test_keystone_catalog_through_its_successor(self, base_url):
        openstack = Path(sys.executable).with_name("openstack")
        assert openstack.exists(), "install the test extra: pip install -e '.[test]'"
        command = KEYSTONE_COMMAND.replace(README_URL, base_url).split()
        assert command[0] == "keystone" and command[-1] == "catalog"
        argv = [str(openstack), "--os-identity-api-version", "2", *command[1:], "list"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["OS_CLIENT_CONFIG_FILE"] = os.devnull  # no clouds.yaml of the machine's
        done = subprocess.run(
            [*argv, "-f", "json"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        catalog = {entry["Name"]: entry for entry in json.loads(done.stdout)}
        assert catalog["cloudServersOpenStack"]["Type"] == "compute"
        assert catalog["cloudLoadBalancers"]["Type"] == "rax:load-balancer"
        for endpoint in catalog["cloudServersOpenStack"]["Endpoints"]:
            assert endpoint["publicURL"].startswith(base_url + "/mimicking/NovaApi-")


def service_url(http: requests.Session, base_url: str, user: str, service: str) -> str:
    """The ORD endpoint of ``service`` in ``user``'s catalog, as the README's login gives it."""
    credentials = {"RAX-KSKEY:apiKeyCredentials": {"username": user, "apiKey": "12345"}}
    response = http.post(base_url + "/identity/v2.0/tokens", json={"auth": credentials})
    assert response.status_code == 200, response.text
    [entry] = [e for e in response.json()["access"]["serviceCatalog"] if e["name"] == service]
    [endpoint] = [e for e in entry["endpoints"] if e["region"] == "ORD"]
    return endpoint["publicURL"]


def tick(http: requests.Session, base_url: str, seconds: float) -> None:
    assert http.post(base_url + "/mimic/v1.1/tick", json={"amount": seconds}).status_code == 200


def post_json(http: requests.Session, url: str, body: str) -> requests.Response:
    return http.post(url, data=body, headers={"Content-Type": "application/json"})


def server_body(metadata: dict[str, Any], **server: str) -> str:
    """The README's create-server body with other metadata (and fields)."""
    document = json.loads(README_SERVER_BODY)
    document["server"].update(server, metadata=metadata)
    return json.dumps(document)


def lb_body(key: str, value: Any) -> str:
    """The README's create-load-balancer body with another preset."""
    document = json.loads(README_LB_BODY)
    document["loadBalancer"]["metadata"] = [{"key": key, "value": value}]
    return json.dumps(document)


class TestMimicReadmeCompute:
    @pytest.fixture
    def nova(self, http, base_url, name) -> str:
        return service_url(http, base_url, name, "cloudServersOpenStack")

    def status(self, http: requests.Session, nova: str, server_id: str) -> str:
        response = http.get(f"{nova}/servers/{server_id}")
        assert response.status_code == 200, response.text
        return response.json()["server"]["status"]

    def test_the_readme_server_stays_in_build_for_120_seconds(self, http, base_url, nova):
        created = post_json(http, nova + "/servers", README_SERVER_BODY)
        assert created.status_code == 202, created.text
        server_id = created.json()["server"]["id"]
        shown = http.get(f"{nova}/servers/{server_id}").json()["server"]
        assert shown["name"] == "api-test-server-1"
        assert shown["image"]["id"] == "3afe97b2-26dc-49c5-a2cc-a2fc8d80c001"
        assert shown["flavor"]["id"] == "2"
        # Mimic refuses the README's own number (docs/compatibility.md); stored as text.
        assert shown["metadata"] == {"server_building": "120"}
        assert shown["status"] == "BUILD"
        tick(http, base_url, 119)
        assert self.status(http, nova, server_id) == "BUILD"
        tick(http, base_url, 1)
        assert self.status(http, nova, server_id) == "ACTIVE"

    def test_fail_with_the_given_message_and_code(self, http, nova):
        failure = json.dumps({"message": "given message", "code": 503})
        response = post_json(
            http, nova + "/servers", server_body({"create_server_failure": failure})
        )
        assert response.status_code == 503
        assert "given message" in response.text

    def test_error_state_on_creation(self, http, nova):
        created = post_json(http, nova + "/servers", server_body({"server_error": "1"}))
        assert created.status_code == 202, created.text
        assert self.status(http, nova, created.json()["server"]["id"]) == "ERROR"

    def test_fails_to_delete_with_the_code_the_number_of_times(self, http, nova):
        failure = json.dumps({"code": 500, "times": 2})
        body = server_body({"delete_server_failure": failure})
        server_id = post_json(http, nova + "/servers", body).json()["server"]["id"]
        assert [http.delete(f"{nova}/servers/{server_id}").status_code for _ in range(3)] == [
            500,
            500,
            204,
        ]
        assert http.get(f"{nova}/servers/{server_id}").status_code == 404

    def test_image_and_flavor_not_found_for_the_preset_ids(self, http, nova):
        presets = http.get(nova.split("/mimicking/")[0] + "/mimic/v1.0/presets").json()
        [image, *_] = presets["servers"]["invalid_image_ref"]
        [flavor, *_] = presets["servers"]["invalid_flavor_ref"]
        # Mimic's code answers 404 where its README says 400 (docs/compatibility.md).
        assert http.get(f"{nova}/images/{image}").status_code == 404
        assert http.get(f"{nova}/flavors/{flavor}").status_code == 404
        # Other ids: the README says 200, but Mimic's code (and ours) answers 404 for an id
        # that is not an image; every listed image and flavor answers 200.
        [listed, *_] = http.get(f"{nova}/images").json()["images"]
        assert http.get(f"{nova}/images/{listed['id']}").status_code == 200
        assert http.get(f"{nova}/images/not-an-image").status_code == 404
        assert http.get(f"{nova}/flavors/2").status_code == 200
        bad_image = post_json(http, nova + "/servers", server_body({}, imageRef=image))
        bad_flavor = post_json(http, nova + "/servers", server_body({}, flavorRef=flavor))
        assert (bad_image.status_code, bad_flavor.status_code) == (400, 400)


class TestMimicReadmeLoadBalancers:
    @pytest.fixture
    def clb(self, http, base_url, name) -> str:
        return service_url(http, base_url, name, "cloudLoadBalancers")

    def create(self, http: requests.Session, clb: str, body: str) -> int:
        created = post_json(http, clb + "/loadbalancers", body)
        assert created.status_code == 202, created.text
        return created.json()["loadBalancer"]["id"]

    def status(self, http: requests.Session, clb: str, lb_id: int) -> str:
        return http.get(f"{clb}/loadbalancers/{lb_id}").json()["loadBalancer"]["status"]

    def add_node(self, http: requests.Session, clb: str, lb_id: int, address: str) -> int:
        node = {"address": address, "port": 80, "condition": "ENABLED"}
        response = http.post(f"{clb}/loadbalancers/{lb_id}/nodes", json={"nodes": [node]})
        return response.status_code

    def test_the_readme_load_balancer_is_pending_update_20_seconds_per_change(
        self, http, base_url, clb
    ):
        lb_id = self.create(http, clb, README_LB_BODY)
        lb = http.get(f"{clb}/loadbalancers/{lb_id}").json()["loadBalancer"]
        assert lb["name"] == "a-new-loadbalancer2"
        assert lb["protocol"] == "HTTP"
        assert [vip["type"] for vip in lb["virtualIps"]] == ["PUBLIC", "PUBLIC"]  # v4 and v6
        assert lb["status"] == "ACTIVE"
        assert self.add_node(http, clb, lb_id, "10.1.1.1") == 202
        assert self.status(http, clb, lb_id) == "PENDING-UPDATE"
        tick(http, base_url, 19)
        assert self.status(http, clb, lb_id) == "PENDING-UPDATE"
        tick(http, base_url, 1)
        assert self.status(http, clb, lb_id) == "ACTIVE"
        nodes = http.get(f"{clb}/loadbalancers/{lb_id}/nodes").json()["nodes"]
        [node_id] = [node["id"] for node in nodes]
        assert http.delete(f"{clb}/loadbalancers/{lb_id}/nodes/{node_id}").status_code == 202
        assert self.status(http, clb, lb_id) == "PENDING-UPDATE"
        tick(http, base_url, 20)
        assert self.status(http, clb, lb_id) == "ACTIVE"

    def test_build_for_the_given_time(self, http, base_url, clb):
        lb_id = self.create(http, clb, lb_body("lb_building", 30))
        assert self.status(http, clb, lb_id) == "BUILD"
        tick(http, base_url, 30)
        assert self.status(http, clb, lb_id) == "ACTIVE"

    def test_pending_delete_for_the_given_time(self, http, base_url, clb):
        lb_id = self.create(http, clb, lb_body("lb_pending_delete", 15))
        assert http.delete(f"{clb}/loadbalancers/{lb_id}").status_code == 202
        assert self.status(http, clb, lb_id) == "PENDING-DELETE"
        tick(http, base_url, 15)
        assert self.status(http, clb, lb_id) == "DELETED"

    def test_error_state(self, http, clb):
        lb_id = self.create(http, clb, lb_body("lb_error_state", "error"))
        assert self.add_node(http, clb, lb_id, "10.1.1.2") == 202
        assert self.status(http, clb, lb_id) == "ERROR"


# ---------------------------------------------------------------------------------------
# Mirage API v2
# ---------------------------------------------------------------------------------------


def spec(text: str) -> str:
    return textwrap.dedent(text).strip()


CREATE_SCENARIO = spec(
    """
    {
      "scenario": "scenario_name"
    }
    """
)
YAML_CONFIG = spec(
    """
    recording:
      scenario: scenario_x
      session: session_x
    """
)
EXPORTED_YAML = spec(
    """
    recording:
      scenario: scenario_x
      session: session_x
      stubs:
      - file: stub_0.json
      - file: stub_1.json
      - file: stub_2.json
      - file: stub_3.json
      - file: stub_4.json
    """
)
BEGIN_RECORD = spec(
    """
    {
      "begin": null,
      "session": "session_name",
      "mode": "record"
    }
    """
)
END_SESSION = spec(
    """
    {
      "end": null,
      "session": "playback_28"
    }
    """
)
END_ALL_SESSIONS = spec(
    """
    {
      "end": "sessions"
    }
    """
)
ADD_STUB = spec(
    """
    {
        "request": {
            "method": "POST",
            "bodyPatterns": [
                { "contains": ["<status>IS_OK2</status>"] }
            ]
            },
        "response": {
            "status": 200,
            "body": "<response>YES</response>"
        }
    }
    """
)
PLAYBACK_BODY = "matcher here"
PUT_FIXED_DELAY = spec(
    """
    {
      "name": "delay_name",
      "delay_type": "fixed",
      "milliseconds": 50
    }
    """
)
PUT_NORMALVARIATE_DELAY = spec(
    """
    {
      "name": "delay_name",
      "delay_type": "normalvariate",
      "mean": "mean_value",
      "stddev": "val"
    }
    """
)
PUT_WEIGHTED_DELAY = spec(
    """
    {
      "name": "weighted_delay_name",
      "delay_type": "weighted",
     "delays": "fixed,30000,5:normalvariate,5000,1000,15:normalvariate,1000,500,70"}
    """
)
TRACKER_QUERY = "my_test_suite_x sc:>=200 sc:<=201 rt:>200"

SPEC_LITERALS = [
    CREATE_SCENARIO,
    YAML_CONFIG,
    EXPORTED_YAML,
    BEGIN_RECORD,
    END_SESSION,
    END_ALL_SESSIONS,
    ADD_STUB,
    PUT_FIXED_DELAY,
    PUT_NORMALVARIATE_DELAY,
    PUT_WEIGHTED_DELAY,
    TRACKER_QUERY,
]

# The spec's "Example request body" under /api/v2/matcher is the same text as this, and
# its "Example response body" is what a stub with this response gives back.
MATCHER_RESPONSE = {
    "body": "body bytes or plain text here",
    "headers": {"key": "value", "key1": "value1"},
    "statusCode": 200,
}
# The spec shows no stub that matches its playback body ``matcher here``; this one does,
# and answers the matcher's example response.
MATCHER_HERE_STUB = {
    "request": {"method": "POST", "bodyPatterns": {"contains": [PLAYBACK_BODY]}},
    "response": {
        "status": MATCHER_RESPONSE["statusCode"],
        "body": MATCHER_RESPONSE["body"],
        "headers": MATCHER_RESPONSE["headers"],
    },
}
JSON = {"Content-Type": "application/json"}  # the spec: Encoding "application/json"


def full(scenario: str) -> str:
    return f"{HOST}:{scenario}"


def ref(scenario: str) -> str:
    return f"/api/v2/scenarios/objects/{full(scenario)}"


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_the_mirage_literals_are_the_specs():
    if not MIRAGE_SPEC.exists():
        pytest.skip(f"{MIRAGE_SPEC} is absent (a clone without ../shared): nothing to compare")
    text = MIRAGE_SPEC.read_text(encoding="utf-8")
    for literal in SPEC_LITERALS:
        assert squeeze(literal) in squeeze(text), literal
    assert "Example request header: session: your_session_name" in text
    assert "Example request header: session: scenario_name:session_name" in text
    assert "Example request body:\n\n    matcher here\n" in text


@pytest.fixture
def scenarios(http, base_url) -> Iterator[Callable[[str], str]]:
    """Register a literal scenario name to be force-deleted after the test."""
    names: list[str] = []

    def remember(scenario: str) -> str:
        names.append(scenario)
        return scenario

    yield remember
    for scenario in names:
        http.delete(scenario_url(base_url, scenario), headers={"force": "true"})


def create(http: requests.Session, base_url: str, scenario: str) -> None:
    body = CREATE_SCENARIO.replace("scenario_name", scenario)
    response = http.put(base_url + "/api/v2/scenarios", data=body, headers=JSON)
    assert response.status_code == 201, response.text


def action(http: requests.Session, base_url: str, scenario: str, body: str) -> requests.Response:
    return http.post(action_url(base_url, scenario), data=body, headers=JSON)


def begin(
    http: requests.Session, base_url: str, scenario: str, session: str, mode: str
) -> requests.Response:
    body = BEGIN_RECORD.replace("session_name", session).replace('"record"', f'"{mode}"')
    return action(http, base_url, scenario, body)


def end(http: requests.Session, base_url: str, scenario: str, session: str) -> requests.Response:
    return action(http, base_url, scenario, END_SESSION.replace("playback_28", session))


def put_stub(
    http: requests.Session, base_url: str, scenario: str, session: str, body: str
) -> requests.Response:
    return http.put(stubs_url(base_url, scenario), data=body, headers={**JSON, "session": session})


def record_spec_stubs(
    http: requests.Session, base_url: str, scenario: str
) -> list[requests.Response]:
    """Begin, put the spec's stub twice and the ``matcher here`` stub, end: the responses."""
    responses = [action(http, base_url, scenario, BEGIN_RECORD)]
    responses += [put_stub(http, base_url, scenario, "session_name", ADD_STUB) for _ in range(2)]
    responses.append(
        put_stub(http, base_url, scenario, "session_name", json.dumps(MATCHER_HERE_STUB))
    )
    responses.append(end(http, base_url, scenario, "session_name"))
    return responses


def spec_stub(i: int) -> dict[str, Any]:
    """The spec's example stub with its own matcher."""
    doc = json.loads(ADD_STUB)
    doc["request"]["bodyPatterns"][0]["contains"] = [f"<status>IS_OK{i}</status>"]
    return doc


def upload_archive(http, base_url, scenario: str, session: str, stubs: int) -> None:
    yaml = YAML_CONFIG.replace("scenario_x", scenario).replace("session_x", session)
    entries: dict[str, Any] = {f"{scenario}.yaml": yaml}
    entries.update({f"stub_{i}.json": spec_stub(i) for i in range(stubs)})
    files = [("files", (f"{scenario}.zip", make_zip(entries), "application/zip"))]
    response = http.post(base_url + "/api/v2/scenarios/upload", files=files, data={})
    assert response.status_code == 200, response.text


def play(http, base_url, scenario: str, session: str, body: str) -> requests.Response:
    return http.post(stubs_url(base_url, scenario), data=body, headers={"session": session})


SESSION_KEYS = {"status", "loaded", "name", "last_used"}


class TestMirageSpec:
    """One test per section of the spec, in its order."""

    def test_create_scenario(self, http, base_url, scenarios):
        scenarios("scenario_name")
        response = http.put(base_url + "/api/v2/scenarios", data=CREATE_SCENARIO, headers=JSON)
        assert response.status_code == 201, response.text
        # A bare object, as Mirage answers (docs/compatibility.md, "kept on purpose").
        assert response.json() == {
            "name": full("scenario_name"),
            "scenarioRef": ref("scenario_name"),
        }
        again = http.put(base_url + "/api/v2/scenarios", data=CREATE_SCENARIO, headers=JSON)
        assert_error(again, 422, "already exists")
        missing = http.put(base_url + "/api/v2/scenarios", data="{}", headers=JSON)
        assert_error(missing, 400)

    @pytest.mark.parametrize("yaml", [YAML_CONFIG, EXPORTED_YAML], ids=["yaml", "exported"])
    def test_upload(self, http, base_url, scenarios, tmp_path, capsys, yaml):
        # The spec's scenario_x.zip: its YAML and five stubs, stub_0 the spec's example stub.
        scenarios("scenario_x")
        entries: dict[str, Any] = {"scenario_x.yaml": yaml, "stub_0.json": SEED_STUB}
        entries.update({f"stub_{i}.json": spec_stub(i) for i in range(1, 5)})
        path = tmp_path / "scenario_x.zip"
        path.write_bytes(make_zip(entries))
        # The spec's Python snippet (tests/test_api_v2_upload.py keeps it, opening 'rb').
        assert seed_upload(str(path), base_url) is None
        assert capsys.readouterr().out == "Upload success!\n"
        detail = http.get(scenario_url(base_url, "scenario_x")).json()
        assert detail["stubs"] == 5
        [session] = detail["sessions"]
        assert (session["name"], session["status"]) == ("session_x", "playback")
        played = play(http, base_url, "scenario_x", "session_x", "<tag> matcher here </tag>")
        assert (played.status_code, played.text) == (200, "<response> Response here </response>\n")
        # The documented response codes: 422 scenario exists, 415 not a zip, 400 bad YAML.
        files = [("files", ("scenario_x.zip", path.read_bytes(), "application/zip"))]
        again = http.post(base_url + "/api/v2/scenarios/upload", files=files)
        assert_error(again, 422)
        text = [("files", ("scenario_x.txt", b"not a zip", "text/plain"))]
        assert_error(http.post(base_url + "/api/v2/scenarios/upload", files=text), 415)
        broken = make_zip({"scenario_y.yaml": "recording: [unclosed", "stub_0.json": SEED_STUB})
        files = [("files", ("scenario_y.zip", broken, "application/zip"))]
        assert_error(http.post(base_url + "/api/v2/scenarios/upload", files=files), 400)

    def test_get_scenario_list(self, http, base_url, scenarios):
        for scenario in ("scenario_1", "scenario_10"):
            create(http, base_url, scenarios(scenario))
        data = assert_data(http.get(base_url + "/api/v2/scenarios"))
        for scenario in ("scenario_1", "scenario_10"):
            assert {"scenarioRef": ref(scenario), "name": full(scenario)} in data

    def test_get_scenario_list_with_details(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_1"))
        upload_archive(http, base_url, scenarios("scenario_10"), "playback_10", 20)
        assert play(http, base_url, "scenario_10", "playback_10", "<status>IS_OK7</status>").ok
        data = assert_data(http.get(base_url + "/api/v2/scenarios/detail"))
        entries = {entry["name"]: entry for entry in data}
        assert entries[full("scenario_1")] == {
            "space_used_kb": 0,
            "name": full("scenario_1"),
            "sessions": [],
            "scenarioRef": ref("scenario_1"),
            "recorded": "-",
            "stub_count": 0,
        }
        busy = entries[full("scenario_10")]
        assert set(busy) == {
            "space_used_kb",
            "name",
            "sessions",
            "scenarioRef",
            "recorded",
            "stub_count",
        }
        assert busy["scenarioRef"] == ref("scenario_10")
        assert busy["stub_count"] == 20
        assert DATE_RE.match(busy["recorded"])
        assert isinstance(busy["space_used_kb"], int) and busy["space_used_kb"] > 0
        [session] = busy["sessions"]
        assert set(session) == SESSION_KEYS
        assert (session["name"], session["status"]) == ("playback_10", "playback")
        assert DATE_RE.match(session["loaded"])
        assert TIMESTAMP_RE.match(session["last_used"])

    def test_get_scenario_details(self, http, base_url, scenarios):
        upload_archive(http, base_url, scenarios("scenario_13"), "playback_13", 26)
        # The spec: the name "can be provided with a host"; both forms answer the same.
        short = http.get(scenario_url(base_url, "scenario_13"))
        with_host = http.get(scenario_url(base_url, full("scenario_13")))
        assert short.status_code == with_host.status_code == 200
        body = short.json()
        assert body == with_host.json()
        # The spec's keys (and ``stub_count`` too, as the detail list has it).
        keys = {"space_used_kb", "name", "sessions", "stubs", "recorded", "scenarioRef"}
        assert set(body) == keys | {"stub_count"}
        assert (body["name"], body["scenarioRef"]) == (full("scenario_13"), ref("scenario_13"))
        assert body["stubs"] == 26
        assert DATE_RE.match(body["recorded"])
        [session] = body["sessions"]
        assert set(session) == SESSION_KEYS
        assert (session["name"], session["status"]) == ("playback_13", "playback")
        assert_error(http.get(scenario_url(base_url, "scenario_404")), 404)

    def test_delete_scenario(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        deleted = http.delete(scenario_url(base_url, "scenario_name"))
        # Mirage answers an empty 200; we add a message (docs/compatibility.md, "Fixed").
        assert assert_data(deleted) == {"message": f"Deleted scenario {full('scenario_name')}"}
        assert_error(http.delete(scenario_url(base_url, "scenario_name")), 412)

    def test_begin_session_record(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        begun = action(http, base_url, "scenario_name", BEGIN_RECORD)
        assert assert_data(begun) == {
            "message": "Record mode initiated....",
            "status": "record",
            "scenario": full("scenario_name"),
            "session": "session_name",
            "scenarioRef": ref("scenario_name"),
        }
        # "400 - something went wrong (e.g. session already exists)"
        assert_error(action(http, base_url, "scenario_name", BEGIN_RECORD), 400, "session_name")

    def test_begin_record_on_a_scenario_with_stubs_is_the_specs_example_error(
        self, http, base_url, scenarios
    ):
        upload_archive(http, base_url, scenarios("scenario_10"), "playback_10", 1)
        response = action(http, base_url, "scenario_10", BEGIN_RECORD)
        message = assert_error(response, 400)
        assert message == (
            f"Scenario ({full('scenario_10')}) has existing stubs, delete them before "
            "recording or create another scenario!"
        )

    def test_begin_session_playback(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        assert record_spec_stubs(http, base_url, "scenario_name")[-1].ok
        begun = begin(http, base_url, "scenario_name", "your_session_name", "playback")
        assert assert_data(begun) == {
            "message": "Playback mode initiated....",
            "status": "playback",
            "scenario": full("scenario_name"),
            "session": "your_session_name",
            "scenarioRef": ref("scenario_name"),
        }

    def test_end_session(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        record_spec_stubs(http, base_url, "scenario_name")
        assert begin(http, base_url, "scenario_name", "playback_28", "playback").ok
        response = action(http, base_url, "scenario_name", END_SESSION)
        assert assert_data(response) == {"message": "Session ended"}

    def test_end_all_sessions(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        record_spec_stubs(http, base_url, "scenario_name")
        assert begin(http, base_url, "scenario_name", "playback_20", "playback").ok
        response = action(http, base_url, "scenario_name", END_ALL_SESSIONS)
        assert assert_data(response) == {"playback_20": {"message": "Session ended"}}

    def test_add_stub(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        _, inserted, updated, *_ = record_spec_stubs(http, base_url, "scenario_name")
        data = assert_data(inserted, 201)
        match = re.fullmatch(r"inserted scenario_stub: ([0-9a-f]{24})", data["message"])
        assert match, data  # the spec's id is 24 hex digits too (a Mongo ObjectId)
        assert data["key"] == match.group(1)
        # The same stub again: Mirage's stateful update.
        assert assert_data(updated, 200)["message"] == "updated with stateful response"

    def test_getting_response_with_stub(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        record_spec_stubs(http, base_url, "scenario_name")
        assert begin(http, base_url, "scenario_name", "your_session_name", "playback").ok
        played = play(http, base_url, "scenario_name", "your_session_name", PLAYBACK_BODY)
        assert (played.status_code, played.text) == (200, MATCHER_RESPONSE["body"])
        assert played.headers["key"] == "value" and played.headers["key1"] == "value1"
        # The spec's stub, put twice: its two responses in turn, then the last repeats.
        for _ in range(3):
            yes = play(
                http, base_url, "scenario_name", "your_session_name", "<status>IS_OK2</status>"
            )
            assert (yes.status_code, yes.text) == (200, "<response>YES</response>")

    def test_getting_request_response_data(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        record_spec_stubs(http, base_url, "scenario_name")
        assert begin(http, base_url, "scenario_name", "session_name", "playback").ok
        header = {"session": "scenario_name:session_name"}
        response = http.post(base_url + "/api/v2/matcher", data=PLAYBACK_BODY, headers=header)
        assert response.status_code == 200, response.text
        assert response.json() == MATCHER_RESPONSE
        missing = http.post(base_url + "/api/v2/matcher", data="nothing", headers=header)
        assert_error(missing, 404)  # the spec's "404 - Response not found"

    def test_get_all_stubs(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name_1"))
        assert assert_data(action(http, base_url, "scenario_name_1", BEGIN_RECORD))
        put = put_stub(http, base_url, "scenario_name_1", "session_name", ADD_STUB)
        assert put.status_code == 201, put.text
        response = http.get(stubs_url(base_url, "scenario_name_1"))
        body = response.json()
        assert set(body) == {"version", "data"}
        [listed] = body["data"]
        assert set(listed) == {"stub", "matchers_hash", "space_used", "recorded", "scenario", "id"}
        assert listed["scenario"] == full("scenario_name_1")
        assert re.fullmatch(r"[0-9a-f]{32}", listed["matchers_hash"])
        assert isinstance(listed["space_used"], int) and listed["space_used"] > 0
        assert DATE_RE.match(listed["recorded"])
        stub = listed["stub"]
        assert set(stub) == {"priority", "request", "args", "recorded", "response"}
        # As the spec shows: the list form of bodyPatterns comes back as an object.
        assert stub["request"] == {
            "bodyPatterns": {"contains": ["<status>IS_OK2</status>"]},
            "method": "POST",
        }
        assert stub["args"] == {}
        assert stub["recorded"] == listed["recorded"]
        assert stub["response"] == {"status": 200, "body": "<response>YES</response>"}
        # The spec shows "priority": -1 for a stub put without one; ours shows null (a stub
        # without a priority comes after every stub with one: -1 would read as the first).
        assert stub["priority"] is None

    def test_delete_all_scenario_stubs(self, http, base_url, scenarios):
        create(http, base_url, scenarios("scenario_name"))
        record_spec_stubs(http, base_url, "scenario_name")
        assert begin(http, base_url, "scenario_name", "your_session_name", "playback").ok
        assert_error(http.delete(stubs_url(base_url, "scenario_name")), 409, "your_session_name")
        assert action(http, base_url, "scenario_name", END_ALL_SESSIONS).ok
        deleted = http.delete(stubs_url(base_url, "scenario_name"))
        assert assert_data(deleted) == "Deleted stubs count: 2"
        assert assert_data(http.get(stubs_url(base_url, "scenario_name"))) == []


POLICIES = "/api/v2/delay-policy"
SPEC_POLICIES = ["slow", "slower", "delay_name", "weighted_delay_name", "my_delay"]


def policy_ref(name: str) -> str:
    return f"{POLICIES}/objects/{name}"


@pytest.fixture
def policies(http, base_url) -> Iterator[None]:
    """The spec's policy names, removed afterwards: other tests name a policy ``slow``."""
    yield
    for policy in SPEC_POLICIES:
        http.delete(base_url + policy_ref(policy))


def put_policy(http: requests.Session, base_url: str, body: str) -> requests.Response:
    return http.put(base_url + POLICIES, data=body, headers=JSON)


@pytest.mark.usefixtures("policies")
class TestMirageSpecDelayPolicies:
    SLOW = '{"name": "slow", "delay_type": "fixed", "milliseconds": "1000"}'
    # The spec lists "slower" with "delay_type": "fixed_2" and slow's delayPolicyRef (typos).
    SLOWER = '{"name": "slower", "delay_type": "fixed", "milliseconds": "5000"}'

    def test_get_delay_policy_list(self, http, base_url):
        for body in (self.SLOW, self.SLOWER):
            assert put_policy(http, base_url, body).status_code == 201
        data = assert_data(http.get(base_url + POLICIES + "/detail"))
        for name, milliseconds in (("slow", "1000"), ("slower", "5000")):
            expected = {
                "delay_type": "fixed",
                "delayPolicyRef": policy_ref(name),
                "name": name,
                "milliseconds": milliseconds,  # shown as sent
            }
            assert expected in data
        typo = self.SLOWER.replace('"fixed"', '"fixed_2"')
        assert_error(put_policy(http, base_url, typo), 400, "fixed_2")

    def test_get_specific_delay_policy(self, http, base_url):
        assert put_policy(http, base_url, self.SLOW).status_code == 201
        assert assert_data(http.get(base_url + policy_ref("slow"))) == [
            {
                "delay_type": "fixed",
                "delayPolicyRef": policy_ref("slow"),
                "name": "slow",
                "milliseconds": "1000",
            }
        ]
        assert_error(http.get(base_url + policy_ref("slowest")), 404)

    def test_add_delay_policy(self, http, base_url):
        created = put_policy(http, base_url, PUT_FIXED_DELAY)
        assert created.status_code == 201, created.text
        body = created.json()
        assert set(body) == {"status_code", "version", "data"}
        assert body["status_code"] == 201
        assert body["data"] == {
            "status": "new",
            "message": "Put Delay Policy Finished",
            "delay_type": "fixed",
            "delayPolicyRef": policy_ref("delay_name"),
            "name": "delay_name",
        }
        # The second example's values are placeholders, not numbers: 409, as the spec says
        # for wrong options. With numbers it updates delay_name.
        assert_error(put_policy(http, base_url, PUT_NORMALVARIATE_DELAY), 409, "mean_value")
        numeric = PUT_NORMALVARIATE_DELAY.replace('"mean_value"', '"1"').replace('"val"', '"1"')
        updated = put_policy(http, base_url, numeric)
        assert updated.status_code == 200, updated.text
        assert updated.json()["data"]["status"] == "updated"
        assert updated.json()["data"]["delay_type"] == "normalvariate"
        weighted = put_policy(http, base_url, PUT_WEIGHTED_DELAY)
        assert weighted.status_code == 201, weighted.text
        assert weighted.json()["data"]["delayPolicyRef"] == policy_ref("weighted_delay_name")
        shown = assert_data(http.get(base_url + policy_ref("weighted_delay_name")))
        assert shown[0]["delays"] == json.loads(PUT_WEIGHTED_DELAY)["delays"]
        # The spec's example output names my_delay.
        mine = put_policy(http, base_url, PUT_FIXED_DELAY.replace("delay_name", "my_delay"))
        assert mine.json()["data"]["delayPolicyRef"] == "/api/v2/delay-policy/objects/my_delay"
        # "400 - bad request"
        assert_error(put_policy(http, base_url, "[]"), 400)

    def test_delete_delay_policy(self, http, base_url):
        assert put_policy(http, base_url, PUT_FIXED_DELAY.replace("delay_name", "my_delay")).ok
        deleted = http.delete(base_url + policy_ref("my_delay"))
        # Mirage (Python 2) wrote [u'my_delay'].
        assert assert_data(deleted) == {"message": "Deleted 1 delay policies from ['my_delay']"}
        # Mirage: 200 "Deleted 0 delay policies"; ours 404 (docs/compatibility.md).
        assert_error(http.delete(base_url + policy_ref("my_delay")), 404)


RECORDS = "/api/v2/tracker/records"
RECORD_KEYS = {
    "function",
    "request_params",
    "start_time",
    "return_code",
    "href",
    "duration_ms",
    "stubo_response",
    "id",
}
DETAIL_KEYS = {
    "function",
    "request_params",
    "tracking_level",
    "start_time",
    "return_code",
    "server",
    "request_size",
    "response_headers",
    "request_headers",
    "host",
    "request_method",
    "id",
    "response_size",
    "duration_ms",
    "stubo_response",
    "port",
    "remote_ip",
}


class TestMirageSpecTracker:
    @pytest.fixture
    def tracked(self, http, base_url, scenarios) -> requests.Response:
        """The spec's record: a GET of scenario_100's stubs, by its full name."""
        create(http, base_url, scenarios("scenario_100"))
        for _ in range(2):  # two more records, so that there are pages to follow
            assert action(http, base_url, "scenario_100", END_ALL_SESSIONS).ok
        response = http.get(stubs_url(base_url, full("scenario_100")))
        assert response.status_code == 200
        return response

    def test_get_records_with_paging(self, http, base_url, tracked):
        response = http.get(base_url + RECORDS, params={"skip": 0, "limit": 2})
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"paging", "data"}
        paging = body["paging"]
        assert set(paging) == {"last", "next", "currentLimit", "totalItems", "previous", "first"}
        total = paging["totalItems"]
        assert total > 2  # every test before this one tracked its calls
        assert paging["currentLimit"] == 2
        assert paging["previous"] is None
        assert paging["first"] == f"{RECORDS}?skip=0&limit=2"
        assert paging["next"] == f"{RECORDS}?skip=2&limit=2"
        # Mirage: total - limit; ours the start of the final page (docs/compatibility.md).
        assert paging["last"] == f"{RECORDS}?skip={(total - 1) // 2 * 2}&limit=2"
        newest, older = body["data"]
        for record in (newest, older):
            assert set(record) >= RECORD_KEYS, record
            assert record["href"] == f"{RECORDS}/objects/{record['id']}"
            assert TIMESTAMP_RE.match(record["start_time"])
        assert newest["function"] == f"/api/v2/scenarios/objects/{full('scenario_100')}/stubs"
        assert newest["scenario"] == full("scenario_100")
        assert (newest["request_params"], newest["return_code"]) == ({}, 200)
        assert isinstance(newest["duration_ms"], int)
        assert newest["stubo_response"] == tracked.text[:120]
        # The next page, as its link says.
        second = http.get(base_url + paging["next"]).json()
        assert second["paging"]["previous"] == paging["first"]
        assert newest["id"] not in {record["id"] for record in second["data"]}

    def test_the_specs_query(self, http, base_url, scenarios):
        create(http, base_url, scenarios("my_test_suite_x"))
        assert http.get(stubs_url(base_url, "my_test_suite_x")).status_code == 200
        assert play(http, base_url, "my_test_suite_x", "no_session", "x").status_code == 404
        response = http.get(base_url + RECORDS, params={"q": TRACKER_QUERY})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["paging"]["totalItems"] == len(body["data"])
        for record in body["data"]:
            assert 200 <= record["return_code"] <= 201 and record["duration_ms"] > 200
            assert "my_test_suite_x" in record["function"]
        # Without the response-time part, the 200 is found and the 404 is not.
        q = TRACKER_QUERY.replace(" rt:>200", "")
        found = http.get(base_url + RECORDS, params={"q": q}).json()["data"]
        path = stubs_url("", "my_test_suite_x")
        assert [(r["function"], r["return_code"]) for r in found] == [(path, 200)]

    def test_get_record_details(self, http, base_url, server, tracked):
        [newest] = http.get(base_url + RECORDS, params={"limit": 1}).json()["data"]
        response = http.get(base_url + newest["href"])
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"data"}
        record = body["data"]
        assert set(record) >= DETAIL_KEYS, DETAIL_KEYS - set(record)
        assert record["id"] == newest["id"]
        assert record["function"] == newest["function"]
        assert record["tracking_level"] == "normal"
        assert record["request_method"] == "GET"
        assert (record["host"], record["port"], record["remote_ip"]) == (
            HOST,
            str(server.port),
            "127.0.0.1",
        )
        assert (record["request_size"], record["response_size"]) == (0, len(tracked.content))
        assert record["return_code"] == 200
        headers = {k.lower(): v for k, v in record["request_headers"].items()}
        assert headers["host"] == f"{HOST}:{server.port}"
        assert headers["user-agent"].startswith("python-requests/")
        response_headers = {k.lower(): v for k, v in record["response_headers"].items()}
        assert response_headers["content-type"].startswith("application/json")
        assert_error(http.get(base_url + RECORDS + "/objects/999999999"), 404)

    def test_record_header_names_are_spelled_as_the_spec_shows(self, http, base_url, tracked):
        [newest] = http.get(base_url + RECORDS, params={"limit": 1}).json()["data"]
        record = http.get(base_url + newest["href"]).json()["data"]
        assert {"Host", "User-Agent", "Accept"} <= set(record["request_headers"])
        assert {"Content-Type", "Content-Length"} <= set(record["response_headers"])
