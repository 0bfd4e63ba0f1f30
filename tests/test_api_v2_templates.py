"""Contract tests: response templates through the real server. Bodies with ``{{`` or
``{%`` are Jinja2 templates rendered in the sandbox at playback; others play as stored;
a template that cannot compile is refused when stored; one that fails answers a 400."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from tests.mirage_helpers import (
    assert_error,
    begin_ok,
    contains,
    create_scenario,
    end_ok,
    list_stubs,
    play,
    playback_of,
    put_stub,
    put_stub_ok,
    stub,
    stubs_path,
)
from tests.zip_helpers import scenario_zip, upload


def played(http, base_url, name, stubs, body="", headers=None, params=None) -> str:
    session = playback_of(http, base_url, name, stubs)
    response = play(http, base_url, name, session, body, headers, params)
    assert response.status_code == 200, response.text
    return response.text


class TestRendering:
    def test_request_parts_are_available(self, http, base_url, name):
        template = (
            "<r><m>{{ request.method }}</m><p>{{ request.path }}</p>"
            "<q>{{ request.query.id }}</q><h>{{ request.headers['x-user'] }}</h>"
            "<n>{{ request.json.name }}</n><b>{{ request.body|length }}</b></r>\n"
        )
        body = '{"name": "ada", "want": "r"}'
        text = played(
            http,
            base_url,
            name,
            [stub(template, **contains('"want"'))],
            body,
            {"X-User": "u1"},
            {"id": "7"},
        )
        assert text == (
            f"<r><m>POST</m><p>{stubs_path(name)}</p><q>7</q><h>u1</h>"
            f"<n>ada</n><b>{len(body)}</b></r>\n"
        )

    def test_proxied_request_headers_are_what_a_template_sees(self, http, base_url, name):
        doc = stub("{{ request.method }} {{ request.path }} {{ request.query.a }}", method="GET")
        session = playback_of(http, base_url, name, [doc])
        headers = {
            "Stubo-Request-Method": "GET",
            "Stubo-Request-Path": "/real/path",
            "Stubo-Request-Query": "a=b",
        }
        response = play(http, base_url, name, session, "", headers)
        assert response.text == "GET /real/path b"

    def test_stub_args_and_dates(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name, "record")
        doc = stub("{{ args.tier }}|{{ today() }}|{{ today('%Y', days=366) }}", **contains("d"))
        response = put_stub(http, base_url, name, name, doc, params={"tier": "gold"})
        assert response.status_code == 201, response.text
        end_ok(http, base_url, name, name)
        begin_ok(http, base_url, name, name + "_p", "playback")
        before = datetime.now(UTC)
        tier, today, next_year = play(http, base_url, name, name + "_p", "d").text.split("|")
        after = datetime.now(UTC)
        assert tier == "gold"
        assert today in {before.strftime("%Y-%m-%d"), after.strftime("%Y-%m-%d")}
        assert int(next_year) in {before.year + 1, after.year + 1, before.year + 2}

    def test_json_bodies_with_tojson(self, http, base_url, name):
        doc = stub(
            '{"echo": {{ request.json.msg|tojson }}, "n": {{ request.json.n + 1 }}}',
            response_headers={"Content-Type": "application/json"},
            **contains('"msg"'),
        )
        text = played(http, base_url, name, [doc], '{"msg": "hi \\"there\\"", "n": 41}')
        assert text == '{"echo": "hi \\"there\\"", "n": 42}'

    def test_stateful_sequences_render_each_response(self, http, base_url, name):
        docs = [
            stub("first {{ request.query.x }}", **contains("s")),
            stub("second {{ request.query.x }}", **contains("s")),
        ]
        session = playback_of(http, base_url, name, docs)
        texts = [play(http, base_url, name, session, "s", params={"x": i}).text for i in range(3)]
        assert texts == ["first 0", "second 1", "second 2"]

    def test_the_matcher_route_renders_too(self, http, base_url, name):
        session = playback_of(http, base_url, name, [stub("hello {{ request.body }}")])
        response = http.post(
            base_url + "/api/v2/matcher", data="world", headers={"session": f"{name}:{session}"}
        )
        assert response.json()["body"] == "hello world"

    def test_uploaded_stubs_are_templates_too(self, http, base_url, name):
        data = scenario_zip(name, name, [stub("up {{ request.body|upper }}", **contains("x"))])
        assert upload(http, base_url, data).status_code == 200
        assert play(http, base_url, name, name, "x").text == "up X"


class TestOptIn:
    def test_bodies_without_tags_play_byte_for_byte(self, http, base_url, name):
        bodies = ["{ {a} } 100% {#not a comment#}", '{"a": {"b": [1, {"c": 2}]}}', "${x} #{y}"]
        docs = [stub(b, **contains(f"k{i}")) for i, b in enumerate(bodies)]
        session = playback_of(http, base_url, name, docs)
        for i, body in enumerate(bodies):
            assert play(http, base_url, name, session, f"k{i}").text == body

    def test_raw_blocks_keep_literal_tags(self, http, base_url, name):
        text = played(http, base_url, name, [stub("{% raw %}{{ x }}{% endraw %} {{ 1 + 1 }}")])
        assert text == "{{ x }} 2"

    def test_the_stored_stub_keeps_the_template_source(self, http, base_url, name):
        playback_of(http, base_url, name, [stub("{{ request.body }}", **contains("a"))])
        [listed] = list_stubs(http, base_url, name)
        assert listed["stub"]["response"]["body"] == "{{ request.body }}"


class TestErrors:
    def test_a_template_that_does_not_compile_is_refused_when_stored(self, http, base_url, name):
        create_scenario(http, base_url, name)
        begin_ok(http, base_url, name, name, "record")
        for body, reason in [
            ("{{ unclosed", "line 1"),
            ("ok\n{% for x in y %}", "line 2"),
            ("{% include 'other' %}", "'include' is not available"),
            (["fine", "{{ }}"], "response.body[1]"),
        ]:
            response = put_stub(http, base_url, name, name, stub(body, **contains("t")))
            message = assert_error(response, 400, "not a valid template", reason)
            assert "{% raw %}" in message
        assert list_stubs(http, base_url, name) == []
        put_stub_ok(http, base_url, name, name, stub("{{ 'fine' }}", **contains("t")))

    def test_a_failing_render_is_a_400_naming_the_line(self, http, base_url, name):
        docs = [
            stub("line one\n{{ request.json.a.b }}", **contains("x")),
            stub("ok", **contains("y")),
        ]
        session = playback_of(http, base_url, name, docs)
        response = play(http, base_url, name, session, "x not json")
        assert_error(response, 400, "response template failed at line 2", "has no attribute")
        # The server and the session carry on.
        assert play(http, base_url, name, session, "y").text == "ok"

    def test_unsafe_templates_never_run_code(self, http, base_url, name):
        target = f"/tmp/pwned-{name}"
        attempts = [
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            f"{{{{ cycler.__init__.__globals__.os.system('touch {target}') }}}}",
            f"{{{{ request.__init__.__globals__['__builtins__']['open']('{target}', 'w') }}}}",
            "{{ request.headers.clear() }}",
        ]
        docs = [stub(a, **contains(f"k{i}")) for i, a in enumerate(attempts)]
        session = playback_of(http, base_url, name, docs)
        for i in range(len(attempts)):
            response = play(http, base_url, name, session, f"k{i}")
            assert_error(response, 400, "response template failed")
        assert not os.path.exists(target)

    def test_expensive_templates_stop_quickly(self, http, base_url, name):
        bombs = [
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            "{{ range(1000000)|list|length }}",
            "{{ 'x' * 1000000000 }}",
            "{% set x = request.body %}" + "{% set x = x ~ x %}" * 60 + "{{ x|length }}",
            "{{ 7 ** 100000000 }}",
            "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        ]
        docs = [stub(b, **contains(f"k{i}")) for i, b in enumerate(bombs)]
        session = playback_of(http, base_url, name, docs)
        for i in range(len(bombs)):
            start = time.monotonic()
            response = play(http, base_url, name, session, f"k{i} " + "y" * 1000)
            assert_error(response, 400, "response template failed")
            assert time.monotonic() - start < 3
