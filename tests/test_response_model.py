"""Unit tests of a stub's response objects: faults, slow bodies, unknown keys, round trips."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from simulacra.background import drain
from simulacra.dataplane.request import FAULTS
from simulacra.errors import Invalid
from simulacra.store import Store
from simulacra.virtual.archive import read_archive, write_archive
from simulacra.virtual.model import (
    MAX_DRIBBLE_CHUNKS,
    MAX_DRIBBLE_MS,
    RESPONSE_KEYS,
    Response,
    Scenario,
    parse_responses,
    stub_from_document,
)
from simulacra.virtual.service import archive_stubs
from tests.test_store_contract import run, store_url  # noqa: F401  # store_url is a fixture

SC = "localhost:faults"
RESET = "CONNECTION_RESET_BY_PEER"
DRIBBLE = {"numberOfChunks": 5, "totalDuration": 1000}


def stub(response: Any, responses: Any = None, **extra: Any):
    doc: dict[str, Any] = {"request": {"urlPath": "/x"}, "response": response, **extra}
    if responses is not None:
        doc["responses"] = responses
    return stub_from_document(doc, scenario=SC)


def refused(response: Any) -> str:
    with pytest.raises(Invalid) as info:
        stub(response)
    return info.value.message


def reparsed(document: dict[str, Any]) -> list[Response]:
    """The stub read back from its own document, as export then upload do."""
    return stub_from_document(orjson.loads(orjson.dumps(document)), scenario=SC).responses


class TestParse:
    @pytest.mark.parametrize("fault", FAULTS)
    def test_each_wiremock_fault(self, fault):
        [response] = stub({"fault": fault}).responses
        assert response == Response(200, "", {}, None, fault)
        assert response.to_dict() == {"status": 200, "body": "", "fault": fault}

    def test_dribble(self):
        [response] = stub({"body": "slow", "chunkedDribbleDelay": DRIBBLE}).responses
        assert response.dribble == (5, 1000)
        assert response.to_dict()["chunkedDribbleDelay"] == DRIBBLE

    def test_dribble_bounds_are_inclusive(self):
        top = {"numberOfChunks": MAX_DRIBBLE_CHUNKS, "totalDuration": MAX_DRIBBLE_MS}
        assert stub({"chunkedDribbleDelay": top}).responses[0].dribble == (
            MAX_DRIBBLE_CHUNKS,
            MAX_DRIBBLE_MS,
        )
        low = {"numberOfChunks": 1, "totalDuration": 0}
        assert stub({"chunkedDribbleDelay": low}).responses[0].dribble == (1, 0)

    def test_a_list_body_shares_the_fault_like_status_and_headers(self):
        responses = stub({"status": 503, "body": ["a", "b"], "fault": "EMPTY_RESPONSE"}).responses
        assert [(r.status, r.body, r.fault) for r in responses] == [
            (503, "a", "EMPTY_RESPONSE"),
            (503, "b", "EMPTY_RESPONSE"),
        ]
        shared = stub({"body": ["a", "b"], "headers": {"X": "1"}}).responses
        assert shared[0].headers is not shared[1].headers

    def test_a_fault_as_one_step_of_a_sequence(self):
        responses = stub(
            {"status": 200, "body": "a"},
            [{"status": 200, "body": "a"}, {"status": 200, "body": "b"}, {"fault": RESET}],
        ).responses
        assert [(r.body, r.fault) for r in responses] == [("a", None), ("b", None), ("", RESET)]

    def test_header_delay_policy_loses_to_the_documents_own(self):
        [own] = parse_responses({"delayPolicy": "mine"}, "header")
        [given] = parse_responses({}, "header")
        assert (own.delay_policy, given.delay_policy) == ("mine", "header")


class TestRefused:
    @pytest.mark.parametrize(
        ("response", "expected"),
        [
            ({"fault": "BOOM"}, "response.fault must be one of CONNECTION_RESET_BY_PEER, "),
            ({"fault": 1}, "got 1"),
            ({"fault": ["EMPTY_RESPONSE"]}, "response.fault must be one of"),
            ({"chunkedDribbleDelay": 5}, "response.chunkedDribbleDelay must be an object"),
            ({"chunkedDribbleDelay": []}, "response.chunkedDribbleDelay must be an object"),
            (
                {"chunkedDribbleDelay": {"totalDuration": 10}},
                "response.chunkedDribbleDelay.numberOfChunks is missing",
            ),
            (
                {"chunkedDribbleDelay": {"numberOfChunks": 2}},
                "response.chunkedDribbleDelay.totalDuration (ms) is missing",
            ),
            (
                {"chunkedDribbleDelay": {"numberOfChunks": 0, "totalDuration": 10}},
                "numberOfChunks must be an integer from 1 to 10000, got 0",
            ),
            (
                {"chunkedDribbleDelay": {"numberOfChunks": 10_001, "totalDuration": 10}},
                "got 10001",
            ),
            (
                {"chunkedDribbleDelay": {"numberOfChunks": True, "totalDuration": 10}},
                "numberOfChunks must be an integer from 1 to 10000, got True",
            ),
            (
                {"chunkedDribbleDelay": {"numberOfChunks": 2.5, "totalDuration": 10}},
                "got 2.5",
            ),
            (
                {"chunkedDribbleDelay": {"numberOfChunks": 2, "totalDuration": -1}},
                "totalDuration (ms) must be an integer from 0 to 600000, got -1",
            ),
            (
                {"chunkedDribbleDelay": {"numberOfChunks": 2, "totalDuration": "10"}},
                "got '10'",
            ),
            (
                {"chunkedDribbleDelay": {"numberOfChunks": 2, "totalDuration": 600_001}},
                "got 600001",
            ),
            (
                {"chunkedDribbleDelay": {**DRIBBLE, "chunks": 3}},
                "unknown response.chunkedDribbleDelay key 'chunks';"
                " known: numberOfChunks, totalDuration",
            ),
            (
                {"fault": RESET, "chunkedDribbleDelay": DRIBBLE},
                "response has both fault and chunkedDribbleDelay",
            ),
        ],
    )
    def test_bad_fault_or_dribble(self, response, expected):
        assert expected in refused(response)

    def test_unknown_key_is_named_with_the_known_ones(self):
        message = refused({"status": 200, "fixedDelayMilliseconds": 5})
        assert message == (
            "unknown response key 'fixedDelayMilliseconds'; known: status, body, base64Body,"
            " headers, delayPolicy, fault, chunkedDribbleDelay"
        )

    def test_several_unknown_keys_are_all_named(self):
        assert refused({"Status": 200, "bdy": "x"}).startswith(
            "unknown response keys 'Status', 'bdy';"
        )

    def test_an_element_of_responses_is_named_by_its_index(self):
        with pytest.raises(Invalid) as info:
            stub({}, [{"body": "a"}, {"fault": "NOPE"}])
        assert info.value.message.startswith("responses[1].fault must be one of")
        with pytest.raises(Invalid) as info:
            stub({}, [{"body": "a", "oops": 1}])
        assert info.value.message.startswith("unknown responses[0] key 'oops'; known: status,")

    def test_from_dict_refuses_a_list_body(self):
        # A list body is a sequence: parse_responses expands it, one Response cannot hold it.
        with pytest.raises(Invalid, match="not a list"):
            Response.from_dict({"body": ["a", "b"]})

    def test_mirage_documented_response_shapes_still_parse(self):
        # From mirage-api-v2.txt: the upload and stateful-put examples, verbatim.
        doc = {"body": "<response> Response here </response>\n", "status": 200}
        assert stub(doc).responses == [Response(200, "<response> Response here </response>\n")]
        assert stub({"status": 200, "body": "<response>YES</response>"}).responses[0].status == 200
        delayed = stub({"status": 200, "body": "x", "headers": {"A": "b"}, "delayPolicy": "slow"})
        assert delayed.responses == [Response(200, "x", {"A": "b"}, "slow")]


class TestRoundTrip:
    @pytest.mark.parametrize(
        "response",
        [
            Response(),
            Response(201, "b", {"X": "1"}, "slow"),
            Response(200, "", {}, None, "RANDOM_DATA_THEN_CLOSE"),
            Response(200, "slow body", {}, None, None, (3, 250)),
        ],
    )
    def test_from_dict_reads_what_to_dict_writes(self, response):
        assert Response.from_dict(orjson.loads(orjson.dumps(response.to_dict()))) == response

    def test_every_key_to_dict_writes_is_a_known_key(self):
        full = Response(200, "x", {"A": "1"}, "p", None, (2, 10)).to_dict()
        full_fault = Response(200, "x", {}, None, RESET).to_dict()
        binary = Response(200, "eA==", binary=True).to_dict()
        assert set(full) | set(full_fault) | set(binary) == set(RESPONSE_KEYS)

    def test_document_shows_a_fault_step_and_reads_back(self):
        original = stub(
            {"body": "a"},
            [{"body": "a"}, {"body": "b"}, {"fault": RESET}],
        )
        document = original.document()
        assert [r.get("fault") for r in document["responses"]] == [None, None, RESET]
        assert document["response"]["body"] == ["a", "b", ""]
        assert reparsed(document) == original.responses

    def test_document_shows_a_dribble_step(self):
        original = stub({}, [{"body": "a"}, {"body": "b", "chunkedDribbleDelay": DRIBBLE}])
        document = original.document()
        assert document["responses"][1]["chunkedDribbleDelay"] == DRIBBLE
        assert reparsed(document) == original.responses

    def test_a_shared_fault_stays_on_the_list_body(self):
        original = stub({"body": ["a", "b"], "fault": "EMPTY_RESPONSE"})
        document = original.document()
        assert "responses" not in document
        assert document["response"] == {
            "status": 200,
            "body": ["a", "b"],
            "fault": "EMPTY_RESPONSE",
        }
        assert reparsed(document) == original.responses

    def test_export_archive_reads_back_faults(self):
        original = stub({}, [{"body": "a", "chunkedDribbleDelay": DRIBBLE}, {"fault": RESET}])
        content = read_archive(write_archive("faults", "s", [original]), "faults.zip")
        [again] = drain(archive_stubs(content, SC, "2026-01-01"))
        assert again.responses == original.responses

    def test_store_keeps_fault_and_dribble(self, store_url):  # noqa: F811
        original = stub({}, [{"body": "a", "chunkedDribbleDelay": DRIBBLE}, {"fault": RESET}])

        async def body(store: Store) -> None:
            await store.create_scenario(Scenario(SC, "2026-01-01"))
            await store.insert_stub(original)
            [listed] = await store.list_stubs(SC)
            assert [(r.fault, r.dribble) for r in listed.responses] == [
                (None, (5, 1000)),
                (RESET, None),
            ]
            assert listed.responses == original.responses

        run(store_url, body)


class TestBinaryAndRepeatedHeaders:
    """What recording needs: bytes that are not text, and a header sent more than once."""

    PNG = bytes(range(256)) + b"\x89PNG\r\n\x1a\n\x00\xff"

    def test_a_base64_body_is_bytes_on_the_wire_and_in_the_document(self):
        import base64

        encoded = base64.b64encode(self.PNG).decode()
        [response] = stub(
            {"base64Body": encoded, "headers": {"Content-Type": "image/png"}}
        ).responses
        assert response.binary and response.payload == self.PNG
        assert response.to_dict() == {
            "status": 200,
            "base64Body": encoded,
            "headers": {"Content-Type": "image/png"},
        }
        assert reparsed({"request": {"urlPath": "/x"}, "response": response.to_dict()}) == [
            response
        ]

    def test_a_sequence_with_binary_bodies_survives_its_document(self):
        import base64

        first, second = (base64.b64encode(b"\x00" + bytes([i])).decode() for i in (1, 2))
        built = stub({"base64Body": first}, responses=None)
        built.responses.append(Response(200, second, binary=True))
        document = built.document()
        assert [r.payload for r in reparsed(document)] == [b"\x00\x01", b"\x00\x02"]

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ("not base64!", "not valid base64"),
            (5, "must be a base64 string"),
        ],
    )
    def test_bad_base64_is_refused(self, value, fragment):
        assert fragment in refused({"base64Body": value})

    def test_body_and_base64body_together_are_refused(self):
        assert "keep one" in refused({"body": "x", "base64Body": "eA=="})

    def test_a_header_sent_twice_is_a_list(self):
        cookies = ["a=1; Path=/", "b=2; HttpOnly"]
        [response] = stub({"headers": {"Set-Cookie": cookies, "X-One": "1"}}).responses
        assert response.headers == {"Set-Cookie": cookies, "X-One": "1"}
        assert reparsed({"request": {"urlPath": "/x"}, "response": response.to_dict()}) == [
            response
        ]

    @pytest.mark.parametrize("value", [[], [["a"]], ["a", {"b": 1}], ["ok", "a\r\nX: y"]])
    def test_a_bad_list_of_values_is_refused(self, value):
        refused({"headers": {"Set-Cookie": value}})
