"""One fault-injection engine for every cloud mock.

An ``Event`` (server creation, authentication...) declares the criteria it can be
filtered on and the behaviors it supports. A ``BehaviorRegistry`` holds the rules
registered for one scope (a tenant and region, or the whole identity service):
the first rule whose criteria all hold decides the outcome, else the default.
Metadata presets (``server_building``...) compile to the same ``Outcome`` values,
so there is one code path to reason about.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulacra.errors import Invalid, NotFound, shown
from simulacra.regex import LinearRegex, OverBudget, Work

Predicate = Callable[[Any], bool]
ParameterParser = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """What an event should do: a behavior name and its validated parameters."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


def regex_criterion(value: object) -> Predicate:
    """Mimic's criteria use ``re.match`` against the attribute's string; here on RE2, so a
    criterion runs in linear time (a backtracking one is refused when it is added)."""
    if not isinstance(value, str):
        raise Invalid("a criterion value must be a regular expression string")
    pattern = LinearRegex(value, "criterion")

    def holds(actual: object) -> bool:
        if not isinstance(actual, str):
            return False
        try:
            return pattern.match(actual, Work())
        except OverBudget:
            return False  # a value too long to match within bounds

    return holds


def mapping_criterion(value: object) -> Predicate:
    """``{"key": "value-regex", ...}``: every key present with a matching value."""
    if not isinstance(value, dict):
        raise Invalid("a metadata criterion must be an object of keys to regular expressions")
    checks = {str(k): regex_criterion(v) for k, v in value.items()}
    return lambda actual: (
        isinstance(actual, dict) and all(check(actual.get(k)) for k, check in checks.items())
    )


@dataclass(frozen=True)
class Event:
    name: str
    criteria: dict[str, Callable[[object], Predicate]]
    behaviors: dict[str, ParameterParser]


@dataclass
class Rule:
    id: str
    name: str
    parameters: dict[str, Any]
    criteria: list[dict[str, Any]]
    predicates: list[tuple[str, Predicate]]
    steps: list[Outcome | None] = field(default_factory=list)  # for "sequence"
    _next: int = 0

    def matches(self, attributes: dict[str, Any]) -> bool:
        return all(check(attributes.get(name)) for name, check in self.predicates)

    def outcome(self) -> Outcome | None:
        """The outcome for one event; a sequence cycles through its steps forever."""
        if not self.steps:
            return Outcome(self.name, self.parameters)
        step = self.steps[self._next % len(self.steps)]
        self._next += 1
        return step

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "parameters": self.parameters,
            "criteria": self.criteria,
        }


def parse_outcome(event: Event, name: object, parameters: object) -> Outcome:
    if not isinstance(name, str) or name not in event.behaviors:
        known = ", ".join([*event.behaviors, "sequence"])
        raise Invalid(f"unknown behavior {shown(name)} for {event.name}; known: {known}")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise Invalid("behavior 'parameters' must be an object")
    return Outcome(name, event.behaviors[name](parameters))


class BehaviorRegistry:
    def __init__(self, event: Event) -> None:
        self.event = event
        self._rules: list[Rule] = []

    # Pickled by --shared-cloud (simulacra/cloud/shared.py): the predicates are closures,
    # so the rules keep their criteria documents and are compiled again on load.
    def __getstate__(self) -> dict[str, Any]:
        rules = [(r.id, r.name, r.parameters, r.criteria, r.steps, r._next) for r in self._rules]
        return {"event": self.event, "rules": rules}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.event = state["event"]
        self._rules = []
        for rule_id, name, parameters, criteria, steps, next_step in state["rules"]:
            predicates = [
                (criterion, self.event.criteria[criterion](value))
                for item in criteria
                for criterion, value in item.items()
            ]
            rule = Rule(rule_id, name, parameters, criteria, predicates, steps, next_step)
            self._rules.append(rule)

    def add(self, document: object) -> Rule:
        """Validate ``{"name", "parameters", "criteria": [{criterion: value}, ...]}``."""
        if not isinstance(document, dict):
            raise Invalid("a behavior must be a JSON object with 'name' and 'criteria'")
        name = document.get("name")
        parameters = document.get("parameters") or {}
        criteria = document.get("criteria", [])
        if not isinstance(criteria, list):
            raise Invalid("behavior 'criteria' must be a list of {criterion: value} objects")
        predicates: list[tuple[str, Predicate]] = []
        for item in criteria:
            if not isinstance(item, dict) or len(item) != 1:
                raise Invalid("each criterion must be an object with exactly one key")
            ((criterion, value),) = item.items()
            compiler = self.event.criteria.get(criterion)
            if compiler is None:
                known = ", ".join(self.event.criteria)
                raise Invalid(
                    f"unknown criterion {shown(criterion)} for {self.event.name}; known: {known}"
                )
            predicates.append((criterion, compiler(value)))
        steps: list[Outcome | None] = []
        if name == "sequence":
            steps = self._parse_sequence(parameters)
        else:
            outcome = parse_outcome(self.event, name, parameters)
            parameters = outcome.parameters
        rule = Rule(str(uuid.uuid4()), str(name), parameters, criteria, predicates, steps)
        self._rules.append(rule)
        return rule

    def _parse_sequence(self, parameters: object) -> list[Outcome | None]:
        behaviors = parameters.get("behaviors") if isinstance(parameters, dict) else None
        if not isinstance(behaviors, list) or not behaviors:
            raise Invalid('a sequence needs {"behaviors": [{"name": ..., "parameters": ...}, ...]}')
        steps: list[Outcome | None] = []
        for step in behaviors:
            if not isinstance(step, dict):
                raise Invalid("each step of a sequence must be an object with a 'name'")
            if step.get("name") == "default":
                steps.append(None)
            else:
                steps.append(parse_outcome(self.event, step.get("name"), step.get("parameters")))
        return steps

    def remove(self, rule_id: str) -> None:
        for i, rule in enumerate(self._rules):
            if rule.id == rule_id:
                del self._rules[i]
                return
        raise NotFound(f"no {self.event.name} behavior with id {rule_id}")

    def list(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self._rules]

    @property
    def has_rules(self) -> bool:
        """Whether ``choose`` can answer anything but None: callers skip building its input."""
        return bool(self._rules)

    def choose(self, attributes: dict[str, Any]) -> Outcome | None:
        """The outcome of the first matching rule; None means the default behavior."""
        for rule in self._rules:
            if rule.matches(attributes):
                return rule.outcome()
        return None


# Parameter parsers shared by events ---------------------------------------------


def number(parameters: dict[str, Any], key: str, default: float | None = None) -> float:
    """A non-negative number of seconds; numeric strings are accepted (Mimic's presets)."""
    value = parameters.get(key, default)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise Invalid(f"behavior parameter {key!r} must be a non-negative number of seconds")
    return float(value)


def failure_parser(default_code: int, default_message: str, default_type: str) -> ParameterParser:
    """``{"code", "message", "type"}``; type "string" means a raw-text body."""

    def parse(parameters: dict[str, Any]) -> dict[str, Any]:
        code = parameters.get("code", default_code)
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
            raise Invalid("behavior parameter 'code' must be an HTTP error status (400-599)")
        message = parameters.get("message", default_message)
        kind = parameters.get("type", default_type)
        if not isinstance(message, str) or not isinstance(kind, str):
            raise Invalid("behavior parameters 'message' and 'type' must be strings")
        return {"code": code, "message": message, "type": kind}

    return parse
