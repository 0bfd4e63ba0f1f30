"""Unit tests of the one fault-injection engine and the clock."""

from __future__ import annotations

import time

import pytest

from simulacra.clock import RealClock, VirtualClock, iso8601
from simulacra.cloud.behaviors import (
    BehaviorRegistry,
    Event,
    Outcome,
    failure_parser,
    mapping_criterion,
    number,
    regex_criterion,
)
from simulacra.errors import Conflict, Invalid, NotFound

EVENT = Event(
    name="creation",
    criteria={"server_name": regex_criterion, "metadata": mapping_criterion},
    behaviors={
        "fail": failure_parser(500, "boom", "computeFault"),
        "build": lambda p: {"duration": number(p, "duration")},
        "error": lambda p: {},
    },
)


def test_first_matching_rule_wins_else_default():
    registry = BehaviorRegistry(EVENT)
    registry.add({"name": "error", "criteria": [{"server_name": "err-.*"}]})
    registry.add({"name": "build", "parameters": {"duration": "30"}, "criteria": []})
    assert registry.choose({"server_name": "err-1"}) == Outcome("error", {})
    assert registry.choose({"server_name": "ok"}) == Outcome("build", {"duration": 30.0})
    rule_ids = [rule["id"] for rule in registry.list()]
    registry.remove(rule_ids[1])
    assert registry.choose({"server_name": "ok"}) is None
    with pytest.raises(NotFound):
        registry.remove(rule_ids[1])


def test_criteria_use_match_semantics_and_all_must_hold():
    registry = BehaviorRegistry(EVENT)
    registry.add(
        {
            "name": "fail",
            "criteria": [{"server_name": "web"}, {"metadata": {"env": "prod|staging"}}],
        }
    )
    assert registry.choose({"server_name": "web-1", "metadata": {"env": "prod"}}) is not None
    assert registry.choose({"server_name": "my-web", "metadata": {"env": "prod"}}) is None
    assert registry.choose({"server_name": "web-1", "metadata": {}}) is None


def test_sequence_cycles_and_default_steps_are_none():
    registry = BehaviorRegistry(EVENT)
    registry.add(
        {
            "name": "sequence",
            "parameters": {"behaviors": [{"name": "error"}, {"name": "default"}]},
        }
    )
    outcomes = [registry.choose({}) for _ in range(4)]
    assert outcomes == [Outcome("error", {}), None, Outcome("error", {}), None]


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"name": "explode"},
        {"name": "fail", "criteria": [{"flavor": "x"}]},
        {"name": "fail", "criteria": [{"server_name": "("}]},
        {"name": "fail", "criteria": {"server_name": "x"}},
        {"name": "fail", "criteria": [{"server_name": "a", "metadata": {}}]},
        {"name": "fail", "parameters": {"code": 200}},
        {"name": "fail", "parameters": {"code": "abc"}},
        {"name": "build", "parameters": {"duration": -1}},
        {"name": "build", "parameters": {"duration": "nan"}},
        {"name": "sequence", "parameters": {"behaviors": []}},
        {"name": "sequence", "parameters": {"behaviors": [{"name": "nope"}]}},
    ],
)
def test_bad_behaviors_are_refused(document):
    registry = BehaviorRegistry(EVENT)
    with pytest.raises(Invalid):
        registry.add(document)
    assert registry.list() == []


def test_virtual_clock_moves_only_forward_and_formats_like_mimic():
    clock = VirtualClock()
    assert clock.seconds() == 0
    assert clock.advance(4) == 4
    assert iso8601(clock.seconds()) == "1970-01-01T00:00:04.000000Z"
    with pytest.raises(Invalid):
        clock.advance(-1)
    with pytest.raises(Conflict):
        RealClock().advance(1)


# Issue 14: a criterion is a user's regex, matched against what a client sends.
EVIL = "a" * 40 + "!"


def test_criteria_run_on_re2_in_linear_time():
    registry = BehaviorRegistry(EVENT)
    registry.add({"name": "error", "criteria": [{"server_name": "^(a+)+$"}]})
    registry.add({"name": "fail", "criteria": [{"metadata": {"env": "^(a|aa)+$"}}]})
    started = time.perf_counter()
    assert registry.choose({"server_name": EVIL, "metadata": {"env": EVIL}}) is None
    assert time.perf_counter() - started < 0.1
    assert registry.choose({"server_name": "aaa"}) == Outcome("error", {})


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)", "(?<=a)b"])
def test_criteria_that_need_backtracking_are_refused_saying_so(pattern):
    registry = BehaviorRegistry(EVENT)
    with pytest.raises(Invalid, match="linear-time"):
        registry.add({"name": "error", "criteria": [{"server_name": pattern}]})
    with pytest.raises(Invalid, match="linear-time"):
        registry.add({"name": "error", "criteria": [{"metadata": {"k": pattern}}]})


def test_a_value_too_long_to_match_within_bounds_does_not_match():
    registry = BehaviorRegistry(EVENT)
    registry.add({"name": "error", "criteria": [{"server_name": "[ab]*a[ab]{14}x"}]})
    started = time.perf_counter()
    assert registry.choose({"server_name": "ab" * 1_000_000}) is None
    assert time.perf_counter() - started < 0.1
