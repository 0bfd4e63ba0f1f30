"""Unit tests: delay policy validation and sampling (pure code, seeded, no timing)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from simulacra.errors import Conflict, Invalid
from simulacra.store.sqlite import SQLiteStore
from simulacra.virtual.delays import (
    MAX_DELAY_MS,
    DelayPolicy,
    parse_policy,
    parse_weighted,
    sample_ms,
)

HOST = "localhost"


def policy(**doc) -> DelayPolicy:
    return parse_policy({"name": "p", **doc}, HOST)


def samples(p: DelayPolicy, n: int = 10_000, seed: int = 1234) -> list[int]:
    rng = random.Random(seed)
    return [sample_ms(p, rng) for _ in range(n)]


def chi_square(observed: Counter, expected: dict[object, float]) -> float:
    return sum((observed[k] - e) ** 2 / e for k, e in expected.items())


class TestParse:
    def test_fixed(self):
        p = policy(delay_type="fixed", milliseconds=50)
        assert (p.host, p.name, p.delay_type) == (HOST, "p", "fixed")
        assert p.document() == {"name": "p", "delay_type": "fixed", "milliseconds": 50}

    def test_values_may_be_numeric_strings_and_are_shown_as_sent(self):
        p = policy(delay_type="normalvariate", mean="100", stddev=" 20.5 ")
        assert p.document() == {
            "name": "p",
            "delay_type": "normalvariate",
            "mean": "100",
            "stddev": " 20.5 ",
        }
        assert (p.choices[0].mean, p.choices[0].stddev) == (100.0, 20.5)

    def test_weighted_keeps_the_string(self):
        text = "fixed,30000,5:normalvariate,5000,1000,15:normalvariate,1000,500,70"
        p = policy(delay_type="weighted", delays=text)
        assert p.document()["delays"] == text
        assert p.cumulative == (5, 20, 90)
        assert [c.kind for c in p.choices] == ["fixed", "normalvariate", "normalvariate"]

    def test_host_prefix_names_another_host(self):
        p = parse_policy(
            {"name": "Other.Example:slow", "delay_type": "fixed", "milliseconds": 1}, HOST
        )
        assert (p.host, p.name) == ("other.example", "slow")
        assert p.document()["name"] == "slow"

    def test_a_fetched_policy_can_be_put_back(self):
        doc = {
            "name": "p",
            "delay_type": "fixed",
            "milliseconds": 5,
            "delayPolicyRef": "/api/v2/delay-policy/objects/p",
        }
        assert parse_policy(doc, HOST).document() == {
            "name": "p",
            "delay_type": "fixed",
            "milliseconds": 5,
        }

    @pytest.mark.parametrize(
        ("doc", "fragment"),
        [
            ([], "JSON object"),
            ("fixed", "JSON object"),
            ({"delay_type": "fixed", "milliseconds": 1}, "'name' is missing"),
            ({"name": "", "delay_type": "fixed", "milliseconds": 1}, "'name' is missing"),
            ({"name": 5, "delay_type": "fixed", "milliseconds": 1}, "'name' is missing"),
            ({"name": "a b", "delay_type": "fixed", "milliseconds": 1}, "illegal"),
            ({"name": "a/b", "delay_type": "fixed", "milliseconds": 1}, "illegal"),
            ({"name": "h/x:a", "delay_type": "fixed", "milliseconds": 1}, "illegal host"),
            ({"name": "p", "milliseconds": 1}, "'delay_type' is missing"),
            ({"name": "p", "delay_type": "uniform"}, "unknown delay_type"),
            ({"name": "p", "delay_type": 1}, "unknown delay_type"),
            ({"name": "p", "delay_type": "fixed", "milliseconds": 1, "ms": 2}, "unknown"),
        ],
    )
    def test_bad_request_is_invalid(self, doc, fragment):
        with pytest.raises(Invalid) as caught:
            parse_policy(doc, HOST)
        assert fragment in caught.value.message

    @pytest.mark.parametrize(
        ("doc", "fragment"),
        [
            ({"delay_type": "fixed"}, "'milliseconds' required"),
            ({"delay_type": "fixed", "milliseconds": 1, "mean": 1, "stddev": 1}, "remove"),
            ({"delay_type": "fixed", "milliseconds": 1, "delays": "fixed,1,1"}, "remove"),
            ({"delay_type": "normalvariate", "mean": 1}, "'stddev' required"),
            ({"delay_type": "normalvariate", "stddev": 1}, "'mean' required"),
            ({"delay_type": "normalvariate", "mean": 1, "stddev": 1, "milliseconds": 1}, "remove"),
            ({"delay_type": "weighted"}, "'delays' required"),
            ({"delay_type": "weighted", "delays": "fixed,1,1", "milliseconds": 1}, "remove"),
            ({"delay_type": "fixed", "milliseconds": "fast"}, "number"),
            ({"delay_type": "fixed", "milliseconds": None}, "number"),
            ({"delay_type": "fixed", "milliseconds": True}, "number"),
            ({"delay_type": "fixed", "milliseconds": [1]}, "number"),
            ({"delay_type": "fixed", "milliseconds": -1}, "between"),
            ({"delay_type": "fixed", "milliseconds": "nan"}, "between"),
            ({"delay_type": "fixed", "milliseconds": "inf"}, "between"),
            ({"delay_type": "fixed", "milliseconds": MAX_DELAY_MS + 1}, "between"),
            ({"delay_type": "normalvariate", "mean": 10, "stddev": -1}, "between"),
        ],
    )
    def test_wrong_options_are_a_conflict(self, doc, fragment):
        with pytest.raises(Conflict) as caught:
            parse_policy({"name": "p", **doc}, HOST)
        assert fragment in caught.value.message

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("", "must be a string"),
            ("   ", "must be a string"),
            (["fixed", 1, 1], "must be a string"),
            ("fixed,1", "'fixed,ms,weight'"),
            ("fixed,1,2,3", "'fixed,ms,weight'"),
            ("normalvariate,1,2", "'normalvariate,mean,stddev,weight'"),
            ("uniform,1,2", "unknown type 'uniform'"),
            ("fixed,1,x", "weight must be a non-negative integer"),
            ("fixed,1,-1", "weight must be a non-negative integer"),
            ("fixed,1,1.5", "weight must be a non-negative integer"),
            ("fixed,abc,1", "milliseconds"),
            ("fixed,1,1:", "segment 2"),
            ("fixed,1,1::fixed,2,1", "segment 2"),
            ("fixed,1,0:fixed,2,0", "positive weight"),
            ("normalvariate,10,-5,1", "stddev"),
        ],
    )
    def test_malformed_weighted_string_is_a_conflict(self, text, fragment):
        with pytest.raises(Conflict) as caught:
            parse_policy({"name": "p", "delay_type": "weighted", "delays": text}, HOST)
        assert fragment in caught.value.message

    def test_weighted_fields_may_have_spaces(self):
        choices, cumulative = parse_weighted(" fixed, 10 , 1 : normalvariate,5, 1,3 ")
        assert cumulative == (1, 4)
        assert (choices[0].mean, choices[1].mean, choices[1].stddev) == (10.0, 5.0, 1.0)


class TestSample:
    def test_fixed_is_exact(self):
        assert set(samples(policy(delay_type="fixed", milliseconds="250"), 100)) == {250}

    def test_fractional_fixed_rounds_to_whole_milliseconds(self):
        assert samples(policy(delay_type="fixed", milliseconds=2.6), 1) == [3]

    def test_normalvariate_is_clamped_at_zero(self):
        values = samples(policy(delay_type="normalvariate", mean=0, stddev=100))
        assert min(values) == 0
        zeros = values.count(0)
        # Half the draws fall below the mean of 0 and become 0.
        assert 0.45 < zeros / len(values) < 0.55

    def test_normalvariate_has_its_mean_and_spread(self):
        values = samples(policy(delay_type="normalvariate", mean=1000, stddev=100))
        mean = sum(values) / len(values)
        spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        assert 990 < mean < 1010
        assert 95 < spread < 105

    def test_huge_draws_are_clamped_to_the_maximum(self):
        p = policy(delay_type="normalvariate", mean=MAX_DELAY_MS, stddev=MAX_DELAY_MS)
        assert max(samples(p, 1000)) == MAX_DELAY_MS

    def test_weighted_distribution_matches_the_weights(self):
        p = policy(delay_type="weighted", delays="fixed,100,5:fixed,200,15:fixed,300,80")
        observed = Counter(samples(p))
        assert set(observed) == {100, 200, 300}
        expected = {100: 500.0, 200: 1500.0, 300: 8000.0}
        # Chi-square with 2 degrees of freedom: 13.8 is the 0.1% critical value. With
        # equal weights instead of 5:15:80 it would be in the thousands.
        assert chi_square(observed, expected) < 13.8

    def test_weights_are_relative(self):
        a = Counter(samples(policy(delay_type="weighted", delays="fixed,1,1:fixed,2,3")))
        b = Counter(samples(policy(delay_type="weighted", delays="fixed,1,25:fixed,2,75")))
        for counts in (a, b):
            assert chi_square(counts, {1: 2500.0, 2: 7500.0}) < 10.8  # 1 dof, 0.1%

    def test_zero_weight_segments_are_never_drawn(self):
        p = policy(delay_type="weighted", delays="fixed,1,0:fixed,2,1:fixed,3,0")
        assert set(samples(p, 2000)) == {2}

    def test_mirage_example_mixes_fixed_and_normal_segments(self):
        text = "fixed,30000,5:normalvariate,5000,1000,15:normalvariate,1000,500,70"
        values = samples(policy(delay_type="weighted", delays=text))
        fixed = sum(v == 30000 for v in values)
        around_5s = sum(2500 < v < 30000 for v in values)
        around_1s = sum(v <= 2500 for v in values)
        n = len(values)
        expected = {"f": n * 5 / 90, "m": n * 15 / 90, "s": n * 70 / 90}
        # The two normal segments overlap at 2500 ms by about 0.6%: a loose bound.
        observed = Counter({"f": fixed, "m": around_5s, "s": around_1s})
        assert chi_square(observed, expected) < 25

    def test_a_seed_repeats_the_sequence(self):
        p = policy(delay_type="weighted", delays="fixed,1,1:normalvariate,50,10,1")
        assert samples(p, 50, seed=7) == samples(p, 50, seed=7)
        assert samples(p, 50, seed=7) != samples(p, 50, seed=8)


class TestStore:
    def test_save_list_delete(self):
        async def run() -> None:
            store = SQLiteStore(":memory:")
            await store.open()
            try:
                first = policy(delay_type="fixed", milliseconds=5)
                assert await store.save_delay_policy(first) is True
                second = policy(delay_type="weighted", delays="fixed,1,1")
                assert await store.save_delay_policy(second) is False  # same (host, name)
                other = parse_policy(
                    {"name": "x:p", "delay_type": "fixed", "milliseconds": 1}, HOST
                )
                assert await store.save_delay_policy(other) is True
                stored = await store.list_delay_policies()
                assert [(p.host, p.name, p.delay_type) for p in stored] == [
                    (HOST, "p", "weighted"),
                    ("x", "p", "fixed"),
                ]
                assert stored[0] == second
                assert await store.delete_delay_policy(HOST, "p") is True
                assert await store.delete_delay_policy(HOST, "p") is False
                assert [p.host for p in await store.list_delay_policies()] == ["x"]
            finally:
                await store.close()

        asyncio.run(run())
