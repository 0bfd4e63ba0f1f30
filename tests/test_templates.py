"""Unit tests for simulacra.virtual.templates: the opt-in rule, the names a template
sees, the sandbox, and the bounds on what one render may cost."""

from __future__ import annotations

import gc
import time
from datetime import UTC, datetime

import pytest

from simulacra.errors import Invalid
from simulacra.virtual import templates
from simulacra.virtual.matching import PlaybackRequest
from simulacra.virtual.model import Response, Stub, stub_from_document
from simulacra.virtual.templates import (
    check_bodies,
    compile_template,
    context_for,
    is_template,
    render,
    render_response,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
STUB = Stub("h:s", {}, [Response(200, "")], args={"id": "42"}, recorded="2024-01-02", id="s1")


def ctx(body: str = "", path: str = "/p", query: str = "", headers: dict | None = None):
    request = PlaybackRequest("POST", path, query, headers or {}, body)
    return context_for(request, STUB, NOW)


def fails(source: str, *fragments: str, context: dict | None = None) -> str:
    with pytest.raises(Invalid) as exc:
        render(source, ctx() if context is None else context)
    message = exc.value.message
    assert message.startswith("response template failed"), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


class TestOptIn:
    @pytest.mark.parametrize("body", ["{{ x }}", "a {% if 1 %}b{% endif %}", "{{", "x{%"])
    def test_bodies_with_a_tag_are_templates(self, body):
        assert is_template(body)

    @pytest.mark.parametrize(
        "body", ["", "plain", '{"a": {"b": 1}}', "{ {x} }", "100% {sure}", "{# comment #}"]
    )
    def test_other_bodies_are_not(self, body):
        assert not is_template(body)

    def test_non_templates_are_served_as_stored(self):
        response = Response(200, "{ {x} } 100%")
        request = PlaybackRequest("POST", "/")
        assert render_response(response, STUB, request, NOW) is response

    def test_raw_block_keeps_literal_braces(self):
        assert render("{% raw %}{{ not a tag }}{% endraw %}", ctx()) == "{{ not a tag }}"

    def test_trailing_newline_is_kept(self):
        assert render("<a>{{ 1 }}</a>\n", ctx()) == "<a>1</a>\n"


class TestNames:
    def test_request_parts(self):
        context = ctx(
            '{"name": "bob", "items": [1, 2]}',
            "/api/thing",
            "q=1&q=2&r=x",
            {"X-Trace": "abc"},
        )
        source = (
            "{{ request.method }} {{ request.path }} {{ request.query.q }} {{ request.query.r }}"
            " {{ request.headers['x-trace'] }} {{ request.json.name }}"
            " {% for i in request.json['items'] %}[{{ i }}]{% endfor %}"
        )
        assert render(source, context) == "POST /api/thing 1 x abc bob [1][2]"
        body = render("{{ request.body }}|{{ request_text }}", context)
        assert body == '{"name": "bob", "items": [1, 2]}|{"name": "bob", "items": [1, 2]}'

    def test_json_is_none_when_the_body_is_not_json(self):
        assert render("{{ request.json is none }}", ctx("<xml/>")) == "True"

    def test_stub_args_recorded_and_dates(self):
        source = (
            "{{ args.id }} {{ recorded }} {{ now.isoformat() }} {{ today() }}"
            " {{ today('%d/%m/%Y', days=-1) }} {{ now.strftime('%H:%M') }}"
        )
        assert render(source, ctx()) == (
            "42 2024-01-02 2024-05-06T07:08:09+00:00 2024-05-06 05/05/2024 07:08"
        )

    def test_filters_for_json_and_xml_bodies(self):
        context = ctx('{"v": "<a & \\"b\\">"}')
        assert render("{{ request.json.v|tojson }}", context) == '"\\u003ca \\u0026 \\"b\\"\\u003e"'
        assert render("{{ request.json.v|e }}", context) == "&lt;a &amp; &#34;b&#34;&gt;"

    def test_missing_values_render_empty_but_using_them_fails_with_the_line(self):
        assert render("[{{ request.query.missing }}]", ctx()) == "[]"
        fails("line 1\n{{ request.json.a.b }}", "at line 2", "has no attribute")


class TestSyntax:
    def test_errors_carry_the_line(self):
        with pytest.raises(Invalid, match="line 2: unexpected"):
            compile_template("ok\n{{ x }")

    @pytest.mark.parametrize(
        "source", ["{% include 'x' %}", "{% import 'x' as y %}", "{% extends 'x' %}"]
    )
    def test_include_import_extends_are_refused(self, source):
        with pytest.raises(Invalid, match="not available in response templates"):
            compile_template(source)

    def test_check_bodies_names_the_body_and_the_escape(self):
        with pytest.raises(Invalid) as exc:
            check_bodies(["fine", "{{ broken"])
        assert "response.body[1] is not a valid template" in exc.value.message
        assert "{% raw %}" in exc.value.message
        check_bodies(["fine", "{{ 1 }}", "{ {x} }"])

    def test_stub_documents_are_checked_when_stored(self):
        doc = {"request": {"urlPath": "/x"}, "response": {"body": "{% for %}"}}
        with pytest.raises(Invalid, match=r"response\.body is not a valid template"):
            stub_from_document(doc, scenario="h:s")

    def test_compiled_once(self):
        assert compile_template("{{ 1 }} once") is compile_template("{{ 1 }} once")


class TestSandbox:
    @pytest.mark.parametrize(
        "source",
        [
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "{{ request.__init__.__globals__ }}",
            "{{ cycler.__init__.__globals__.os.system('true') }}",
            "{{ request.headers.update({'a': 'b'}) }}",
            "{{ request.json.append(1) }}",
        ],
    )
    def test_internals_and_mutation_are_unreachable(self, source):
        context = ctx("[1]")
        with pytest.raises(Invalid, match="response template failed"):
            render(source, context)

    def test_private_attributes_render_as_undefined(self, tmp_path):
        target = tmp_path / "pwned"
        assert render("{{ request._request }}{{ now.__class__ }}", ctx()) == ""
        escape = "request._request.__class__.__init__.__globals__['os'].system"
        fails(f"{{{{ {escape}('touch {target}') }}}}")
        assert not target.exists()

    def test_lipsum_is_gone(self):
        fails("{{ lipsum(1000000) }}", "undefined")


class TestBounds:
    def test_range_is_capped(self):
        assert render("{{ range(10000)|length }}", ctx()) == "10000"
        fails("{{ range(10001)|length }}", "range() of 10001 items")

    def test_loop_iterations_are_counted_across_loops(self):
        start = time.monotonic()
        fails(
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            "more than 20000 iterations",
        )
        assert time.monotonic() - start < 2

    def test_recursive_loops_and_macros_stop(self):
        fails("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion")

    @pytest.mark.parametrize(
        ("source", "reason"),
        [
            ("{{ 'a' * 100000000 }}", "'*' would build"),
            ("{{ ['a'] * 100000000 }}", "'*' would build"),
            ("{{ '%0999999999d' % 1 }}", "printf-style width"),
            ("{{ '%*d' % (999999999, 1) }}", "printf-style width"),
            ("{{ '%0999999999d'|format(1) }}", "printf-style width"),
            ("{{ 'a'|center(1000000000) }}", "center width"),
            ("{{ 'a'.ljust(1000000000) }}", "ljust width"),
            ("{{ '{:>999999999}'.format(1) }}", "format spec"),
            ("{{ range(9999)|join('x' * 10000) }}", "join would build"),
            ("{{ 'ab'.join(range(2000)|map('string')) * 20000 }}", "'*' would build"),
            ("{{ ('y' * 100000).join(range(999)|map('string')) }}", "join would build"),
            ("{{ request.body|replace('', 'y' * 10000) }}", "replace would build"),
            ("{{ (request.body ~ request.body)|indent(100000000) }}", "indent would build"),
            ("{{ 7 ** 100000000 }}", "too large"),
        ],
    )
    def test_growing_operations_are_refused_before_they_allocate(self, source, reason):
        start = time.monotonic()
        fails(source, reason, context=ctx("x" * 5000))
        assert time.monotonic() - start < 2

    def test_repeated_doubling_runs_out_of_budget(self):
        doubling = "{% set x = request.body %}" + "{% set x = x ~ x %}" * 40 + "{{ x|length }}"
        fails(doubling, "'~' would build", context=ctx("x" * 100))
        loop = (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
            "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}"
        )
        fails(loop, "'+' would build")

    def test_constant_folding_cannot_hang_compilation(self):
        start = time.monotonic()
        compile_template("{{ 7 ** 100000000 }}{{ 'a' * 10000000000 }}")
        assert time.monotonic() - start < 1

    def test_output_is_capped(self, monkeypatch):
        monkeypatch.setattr(templates, "MAX_OUTPUT", 1000)
        assert len(render("{% for i in range(99) %}0123456789{% endfor %}", ctx())) == 990
        fails("{% for i in range(101) %}0123456789{% endfor %}", "output is over 1000")

    def test_deadline(self, monkeypatch):
        monkeypatch.setattr(templates, "DEADLINE", -1.0)
        fails("{% for i in range(3) %}{{ i }}{% endfor %}", "longer than")

    def test_a_failed_render_leaves_no_budget_behind(self):
        fails("{{ 'a' * 100000000 }}")
        assert templates._current.get() is None
        assert render("{{ 'a' * 3 }}", ctx()) == "aaa"


class TestRenderResponse:
    def test_renders_the_body_and_keeps_the_rest(self):
        response = Response(201, "{{ request.path }}", {"X": "1"}, "slow")
        rendered = render_response(response, STUB, PlaybackRequest("GET", "/here"), NOW)
        assert rendered == Response(201, "/here", {"X": "1"}, "slow")
        assert response.body == "{{ request.path }}"  # the stored response is untouched

    def test_errors_name_the_stub(self):
        response = Response(200, "{{ 1 / 0 }}")
        with pytest.raises(Invalid, match="stub s1: response template failed at line 1"):
            render_response(response, STUB, PlaybackRequest("GET", "/"), NOW)


def test_a_failed_render_leaves_nothing_for_the_collector():
    """Jinja's rewritten traceback is a cycle holding the template's values (here 10 MB):
    left to the collector, dozens of failed renders were freed at once, holding the loop."""
    stub = Stub(scenario="h:s", request={}, responses=[], id="x", seq=1)
    request = PlaybackRequest("POST", "/p", "", {}, "x")
    failing = Response(200, "{% set s = 'ab' * 5000000 %}{{ s|list|sort|first }}")
    gc.collect()
    with pytest.raises(Invalid, match="more work than a render may do"):
        templates.render_response(failing, stub, request, datetime.now(UTC))
    assert gc.collect() == 0
