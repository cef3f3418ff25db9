"""Stateless matchers: operators, null semantics, hex case, run-time type mismatches."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.unit.rules.rule_helpers import ACTION, one_rule


def where(spec: str):
    return one_rule(f"id: t\nwhere: {spec}\n{ACTION}")


@pytest.mark.parametrize(
    ("spec", "event", "expected"),
    [
        ("{agent_id: 42}", {"agent_id": 42}, True),
        ("{agent_id: 42}", {"agent_id": 43}, False),
        ("{agent_id: {eq: 42}}", {"agent_id": 42.0}, True),
        ("{agent_id: {ne: 42}}", {"agent_id": 43}, True),
        ("{agent_id: {ne: 42}}", {"agent_id": 42}, False),
        ("{score: {lt: 60}}", {"score": 59}, True),
        ("{score: {lt: 60}}", {"score": 60}, False),
        ("{score: {le: 60}}", {"score": 60}, True),
        ("{score: {gt: 60}}", {"score": 61}, True),
        ("{score: {ge: 60}}", {"score": 60}, True),
        ("{score: {ge: 60, lt: 70}}", {"score": 65}, True),
        ("{score: {ge: 60, lt: 70}}", {"score": 75}, False),
        ("{value: {gt: 1.5}}", {"value": Decimal("1.6")}, True),
        ("{score: {in: [1, 2]}}", {"score": 2}, True),
        ("{score: {not_in: [1, 2]}}", {"score": 3}, True),
        ("{score: {not_in: [1, 2]}}", {"score": 2}, False),
        ("{tag1: uptime}", {"tag1": "uptime"}, True),
        ("{tag1: uptime}", {"tag1": "Uptime"}, False),
        ("{tag1: {matches: '^up'}}", {"tag1": "uptime"}, True),
        ("{tag1: {matches: '^up'}}", {"tag1": "sup"}, False),
        ("{tag1: {matches: 'time$'}}", {"tag1": "uptime"}, True),
        ("{tag1: {matches: '(?i)^UP'}}", {"tag1": "uptime"}, True),
        ("{tag1: {matches: '^[a-z]+$'}}", {"tag1": "úptime"}, False),
        ("{tag1: {matches: 'é'}}", {"tag1": "café"}, True),
        ("{tag1: {matches: ''}}", {"tag1": ""}, True),
        ("{tag1: {contains: pti}}", {"tag1": "uptime"}, True),
        ("{tag1: {lt: b}}", {"tag1": "a"}, True),
        ("{file_uri: {exists: true}}", {"file_uri": "ipfs://x"}, True),
        ("{file_uri: {exists: true}}", {"file_uri": ""}, False),
        ("{file_uri: {exists: false}}", {"file_uri": ""}, True),
        ("{file_uri: {exists: false}}", {}, True),
    ],
)
def test_operators(spec, event, expected):
    assert where(spec).matches(event) is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{score: {lt: 60}}", False),
        ("{score: {eq: 60}}", False),
        ("{score: {in: [60]}}", False),
        ("{tag1: {matches: '.*'}}", False),
        ("{tag1: {contains: ''}}", False),
        ("{score: {exists: true}}", False),
        ("{score: {exists: false}}", True),
        ("{score: {ne: 60}}", True),
        ("{score: {not_in: [60]}}", True),
    ],
)
def test_null_satisfies_only_exists_false_ne_and_not_in(spec, expected):
    assert where(spec).matches({"score": None}) is expected
    assert where(spec).matches({}) is expected


@pytest.mark.parametrize(
    "value", ["abc", "60", True, [1], {"a": 1}, float("nan"), Decimal("NaN"), b"x", object()]
)
@pytest.mark.parametrize(
    "spec",
    [
        "{score: {lt: 60}}",
        "{score: 60}",
        "{score: {ne: 60}}",
        "{score: {in: [60]}}",
        "{score: {not_in: [60]}}",
        "{score: {ge: 0}}",
    ],
)
def test_wrong_type_at_run_time_never_matches_and_never_raises(spec, value):
    assert where(spec).matches({"score": value}) is False


@pytest.mark.parametrize("value", [5, ["x"], {"x": 1}, True])
def test_text_operators_on_non_text_do_not_match(value):
    for spec in ("{tag1: {matches: x}}", "{tag1: {contains: x}}", "{tag1: x}", "{tag1: {lt: z}}"):
        assert where(spec).matches({"tag1": value}) is False


def test_hex_addresses_compare_case_insensitively():
    rule = where("{client_address: '0xAbCdEF0000000000000000000000000000000001'}")
    assert rule.matches({"client_address": "0xabcdef0000000000000000000000000000000001"})
    assert rule.matches({"client_address": "0XABCDEF0000000000000000000000000000000001"})
    listed = where("{validator_address: {in: ['0xAA', '0xbb']}, tag1: {ne: '0xCC'}}")
    assert listed.matches({"validator_address": "0xBB", "tag1": "0xcc"}) is False
    assert listed.matches({"validator_address": "0xaa", "tag1": "0xdd"}) is True
    assert where("{file_hash: {contains: '0xAB'}}").matches({"file_hash": "0xabcd"})


def test_combinators_any_all_not_and_lists():
    rule = where("[{agent_id: 1}, {any: [{score: {lt: 10}}, {tag1: bad}]}, {not: {tag2: ignore}}]")
    assert rule.matches({"agent_id": 1, "score": 5})
    assert rule.matches({"agent_id": 1, "score": 50, "tag1": "bad"})
    assert not rule.matches({"agent_id": 1, "score": 50, "tag1": "ok"})
    assert not rule.matches({"agent_id": 1, "score": 5, "tag2": "ignore"})
    assert not rule.matches({"agent_id": 2, "score": 5})
    assert where("{all: [{score: {gt: 1}}, {score: {lt: 3}}]}").matches({"score": 2})


def test_on_keys_restrict_and_hostile_on_values_do_not_match():
    rule = one_rule(f"id: t\non: {{chain_id: [1, 8453], registry: reputation}}\n{ACTION}")
    assert rule.matches({"chain_id": 8453, "registry": "reputation"})
    assert not rule.matches({"chain_id": 84532, "registry": "reputation"})
    assert not rule.matches({"chain_id": [1], "registry": "reputation"})
    assert not rule.matches({"chain_id": True, "registry": "reputation"})
    assert not rule.matches({"registry": "reputation"})


def test_many_conditions_evaluate_without_recursion():
    spec = "{all: [" + ", ".join("{score: {ge: 0}}" for _ in range(900)) + "]}"
    assert where(spec).matches({"score": 1})


def test_group_key_and_values_are_stable_and_hex_folded():
    rule = one_rule(f"id: t\nper: [agent_id, client_address]\n{ACTION}")
    a = {"agent_id": 1, "client_address": "0xAB"}
    b = {"agent_id": 1, "client_address": "0xab", "score": 3}
    assert rule.group_key(a) == rule.group_key(b) == '[1,"0xab"]'
    assert rule.group_values(a) == {"agent_id": 1, "client_address": "0xab"}
    assert one_rule(f"id: u\n{ACTION}").group_key(a) == ""
    assert rule.group_values({"agent_id": Decimal("2"), "client_address": None}) == {
        "agent_id": 2,
        "client_address": None,
    }


def test_catastrophic_pattern_evaluates_in_linear_time():
    # Backtracking `re` takes seconds here, doubling with each further "a".
    rule = where("{tag1: {matches: '^(a+)+$'}}")
    started = time.perf_counter()
    assert rule.matches({"tag1": "a" * 29 + "!"}) is False
    assert time.perf_counter() - started < 1.0
    assert rule.matches({"tag1": "a" * 29}) is True


def test_pattern_too_large_for_a_set_still_matches_exactly():
    # \pL{200} compiles as one RE2 regex but is too large for the one-pattern Set.
    rule = where("{tag1: {matches: '^\\pL{200}$'}}")
    assert rule.matches({"tag1": "é" * 200}) is True
    assert rule.matches({"tag1": "é" * 199 + "1"}) is False
