"""Delay policies: validate a policy document into a value, and sample delays from it.

Pure: no I/O and no clock. Sampling takes a ``random.Random``, so a test can seed it and
check the distribution without timing anything.

A policy is one of (Mirage's shapes):

- ``{"name", "delay_type": "fixed", "milliseconds": 50}``
- ``{"name", "delay_type": "normalvariate", "mean": 100, "stddev": 20}`` (clamped at 0)
- ``{"name", "delay_type": "weighted", "delays": "fixed,30000,5:normalvariate,5000,1000,15"}``:
  segments split on ``:``, fields on ``,``; the type first, an integer weight last and the
  parameters between. Weights are relative (5 and 15 mean 25% and 75%).

Values may be numbers or numeric strings (Mirage stored them as strings).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from simulacra.errors import Conflict, Invalid, shown
from simulacra.virtual.model import HOST_RE, check_name

FIXED = "fixed"
NORMALVARIATE = "normalvariate"
WEIGHTED = "weighted"
DELAY_TYPES = (FIXED, NORMALVARIATE, WEIGHTED)
PARAMETERS: dict[str, tuple[str, ...]] = {
    FIXED: ("milliseconds",),
    NORMALVARIATE: ("mean", "stddev"),
    WEIGHTED: ("delays",),
}
ALL_PARAMETERS = frozenset(p for ps in PARAMETERS.values() for p in ps)
# GET answers carry delayPolicyRef; a client that PUTs a fetched policy back sends it too.
IGNORED_KEYS = frozenset({"delayPolicyRef"})
# An hour: anything longer is a typo, and would hold a connection open for as long.
MAX_DELAY_MS = 3_600_000
# A segment's weight: relative, so a billion is more than any split needs.
MAX_WEIGHT = 1_000_000_000


@dataclass(frozen=True)
class Distribution:
    """One way to draw a delay in milliseconds: a fixed value or a normal variate."""

    kind: str  # FIXED | NORMALVARIATE
    mean: float  # the value itself for FIXED
    stddev: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == FIXED:
            return self.mean
        return rng.normalvariate(self.mean, self.stddev)


@dataclass(frozen=True)
class DelayPolicy:
    host: str  # policies live in a host namespace, as scenarios do
    name: str
    delay_type: str
    parameters: dict[str, Any]  # as the client sent them, shown back unchanged
    choices: tuple[Distribution, ...]
    # Running totals of the integer weights: a draw in [0, total) picks by bisection.
    cumulative: tuple[int, ...] = field(default=(1,))

    @property
    def key(self) -> tuple[str, str]:
        return (self.host, self.name)

    def document(self) -> dict[str, Any]:
        """The policy as stored and shown: name, delay_type and its parameters."""
        return {"name": self.name, "delay_type": self.delay_type, **self.parameters}


def split_name(name: object, host: str) -> tuple[str, str]:
    """``name`` or ``host:name`` -> ``(host, name)``, validated like scenario names."""
    if not isinstance(name, str) or not name:
        raise Invalid("'name' is missing: a delay policy needs a name")
    if ":" in name:
        given_host, _, short = name.rpartition(":")
        if not given_host or not HOST_RE.match(given_host.lower()):
            raise Invalid(
                f"delay policy name {shown(name)} has an illegal host {shown(given_host)}"
            )
        host, name = given_host.lower(), short
    return host, check_name("delay policy", name)


def parse_policy(doc: object, host: str) -> DelayPolicy:
    """Validate a PUT document into a DelayPolicy.

    ``Invalid`` (400): not an object, unknown keys, no or bad name, no or unknown delay_type.
    ``Conflict`` (409, as Mirage): a parameter missing, one of another type given, a value
    that is not a number in range, a malformed weighted string.
    """
    if not isinstance(doc, dict):
        raise Invalid('body must be a JSON object: {"name", "delay_type", ...parameters}')
    unknown = sorted(set(doc) - ALL_PARAMETERS - IGNORED_KEYS - {"name", "delay_type"})
    if unknown:
        known = ", ".join(["name", "delay_type", *sorted(ALL_PARAMETERS)])
        names = ", ".join(shown(k, 40) for k in unknown[:5])
        raise Invalid(f"unknown delay policy field(s) {names}; known: {known}")
    host, name = split_name(doc.get("name"), host)
    delay_type = doc.get("delay_type")
    if delay_type is None:
        raise Invalid("'delay_type' is missing: use fixed, normalvariate or weighted")
    if delay_type not in DELAY_TYPES:
        raise Invalid(
            f"unknown delay_type {shown(delay_type)}: use fixed, normalvariate or weighted"
        )
    wanted = PARAMETERS[delay_type]
    missing = [p for p in wanted if p not in doc]
    if missing:
        raise Conflict(f"{', '.join(repr(p) for p in missing)} required for {delay_type!r} delays")
    extra = sorted(p for p in ALL_PARAMETERS - set(wanted) if p in doc)
    if extra:
        raise Conflict(
            f"{delay_type!r} delays take {', '.join(repr(p) for p in wanted)} only;"
            f" remove {', '.join(repr(p) for p in extra)}"
        )
    parameters = {p: doc[p] for p in wanted}
    if delay_type == FIXED:
        choices: tuple[Distribution, ...] = (
            Distribution(FIXED, _number(doc["milliseconds"], "milliseconds")),
        )
        cumulative: tuple[int, ...] = (1,)
    elif delay_type == NORMALVARIATE:
        choices = (
            Distribution(
                NORMALVARIATE, _number(doc["mean"], "mean"), _number(doc["stddev"], "stddev")
            ),
        )
        cumulative = (1,)
    else:
        choices, cumulative = parse_weighted(doc["delays"])
    return DelayPolicy(host, name, delay_type, parameters, choices, cumulative)


def parse_weighted(text: object) -> tuple[tuple[Distribution, ...], tuple[int, ...]]:
    """``"fixed,30000,5:normalvariate,5000,1000,15"`` -> distributions and cumulative weights.

    Mirage silently dropped segments of an unknown type; a typo would then change the
    distribution unnoticed, so every segment must parse here (else ``Conflict``).
    """
    if not isinstance(text, str) or not text.strip():
        raise Conflict("'delays' must be a string like 'fixed,30000,5:normalvariate,5000,1000,15'")
    choices: list[Distribution] = []
    cumulative: list[int] = []
    total = 0
    for number, segment in enumerate(text.split(":"), 1):
        fields = [f.strip() for f in segment.split(",")]
        where = f"weighted delay segment {number} ({shown(segment.strip())})"
        kind = fields[0]
        if kind == FIXED and len(fields) == 3:
            choice = Distribution(FIXED, _number(fields[1], f"{where}: milliseconds"))
        elif kind == NORMALVARIATE and len(fields) == 4:
            choice = Distribution(
                NORMALVARIATE,
                _number(fields[1], f"{where}: mean"),
                _number(fields[2], f"{where}: stddev"),
            )
        elif kind in (FIXED, NORMALVARIATE):
            shape = "fixed,ms,weight" if kind == FIXED else "normalvariate,mean,stddev,weight"
            raise Conflict(f"{where} must be {shape!r}")
        else:
            raise Conflict(f"{where}: unknown type {shown(kind)}, use fixed or normalvariate")
        weight = fields[-1]
        # ASCII digits only: str.isdigit() takes "²", which int() refuses (it was a 500)
        digits = weight.isascii() and weight.isdigit() and len(weight) <= 10
        weight_n = int(weight) if digits else -1
        if not 0 <= weight_n <= MAX_WEIGHT:
            raise Conflict(
                f"{where}: the weight must be a non-negative integer up to {MAX_WEIGHT},"
                f" got {shown(weight)}"
            )
        total += weight_n
        choices.append(choice)
        cumulative.append(total)
    if total <= 0:
        raise Conflict("weighted delays need at least one segment with a positive weight")
    return tuple(choices), tuple(cumulative)


def _number(value: object, what: str) -> float:
    """A delay parameter in ms: a number or numeric string, finite, 0..MAX_DELAY_MS."""
    number: float
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Conflict(f"{what} must be a number of milliseconds, got {shown(value)}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise Conflict(f"{what} must be a number of milliseconds, got {shown(value)}") from None
    else:
        number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_DELAY_MS:
        raise Conflict(f"{what} must be between 0 and {MAX_DELAY_MS} ms, got {shown(value)}")
    return number


def sample_ms(policy: DelayPolicy, rng: random.Random) -> int:
    """Draw one delay in whole milliseconds, clamped to 0..MAX_DELAY_MS."""
    choices = policy.choices
    if len(choices) == 1:
        choice = choices[0]
    else:
        # Integer weights: a uniform draw in [0, total) falls in exactly one segment's
        # share, and a zero-weight segment has an empty share.
        draw = rng.randrange(policy.cumulative[-1])
        choice = choices[bisect_right(policy.cumulative, draw)]
    ms = choice.sample(rng)
    return round(min(max(ms, 0.0), MAX_DELAY_MS))
