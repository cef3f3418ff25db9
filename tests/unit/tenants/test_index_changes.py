"""RuleIndex changed one rule at a time answers as an index rebuilt from the same rules."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rules import RuleIndex, load_rules_text
from tests.unit.rules.test_index import ACTION, events, ons, wheres

RULE_IDS = [f"r{i}" for i in range(8)]

#: One change: put rule id with (on, where, enabled), or remove id (None).
changes = st.lists(
    st.tuples(
        st.sampled_from(RULE_IDS),
        st.one_of(st.none(), st.tuples(ons, wheres, st.booleans())),
    ),
    min_size=1,
    max_size=30,
)


def compile_one(rule_id, on, where, enabled):
    rule = {"id": rule_id, "enabled": enabled, "on": on, "actions": ACTION}
    if where is not None:
        rule["where"] = where
    result = load_rules_text(json.dumps({"rules": [rule]}), "gen.yaml", environ={})
    assert [str(e) for e in result.errors] == []
    return result.rules[0]


@settings(max_examples=200, deadline=None)
@given(changes, st.lists(events, min_size=1, max_size=10), st.booleans())
def test_changed_index_equals_rebuilt_index(steps, stream, start_warm):
    index = RuleIndex()
    current = {}  # id -> enabled rule, what a rebuilt index would be built from
    for n, (rule_id, spec) in enumerate(steps):
        if spec is None:
            assert index.remove(rule_id) == (rule_id in current)
            current.pop(rule_id, None)
        else:
            rule = compile_one(rule_id, *spec)
            index.put(rule)
            if rule.enabled:
                current[rule_id] = rule
            else:
                current.pop(rule_id, None)
        if start_warm or n == len(steps) - 1:
            # Lookups between changes fill the bucket caches that later changes must keep
            # up to date.
            for event in stream:
                index.matching(event)
    assert {r.id for r in index.rules} == set(current)
    rebuilt = RuleIndex(index.rules)
    assert index.event_fields == rebuilt.event_fields
    for event in stream:
        assert index.matching(event) == rebuilt.matching(event)
        brute = [r for r in index.rules if r.matches(event)]
        assert index.matching(event) == brute


def test_a_replaced_rule_keeps_its_place_and_a_removed_one_is_gone():
    a = compile_one("a", {"registry": "reputation"}, None, True)
    b = compile_one("b", {"registry": "reputation"}, {"agent_id": 1}, True)
    index = RuleIndex([a, b])
    event = {"registry": "reputation", "event_type": "NewFeedback", "agent_id": 1}
    assert [r.id for r in index.matching(event)] == ["a", "b"]
    a2 = compile_one("a", {"registry": "reputation"}, {"agent_id": 2}, True)
    index.put(a2)
    assert index.matching(event) == [b]
    assert index.matching({**event, "agent_id": 2}) == [a2]
    index.put(compile_one("a", {"registry": "reputation"}, None, True))
    assert [r.id for r in index.matching(event)] == ["a", "b"]
    assert index.remove("b")
    assert [r.id for r in index.matching(event)] == ["a"]
    assert not index.remove("b")
    # A chain no rule named before: its events now reach the new rule, not only the old.
    c = compile_one("c", {"chain_id": 8453}, None, True)
    index.put(c)
    assert [r.id for r in index.matching({**event, "chain_id": 8453})] == ["a", "c"]
    assert [r.id for r in index.matching({**event, "chain_id": 1})] == ["a"]


def test_a_bucket_shared_by_two_kinds_stays_up_to_date_after_one_kind_is_split_off():
    """Two event kinds share one merged bucket while only catch-all rules exist; a rule on
    one kind splits it off, and a later change must still reach the other kind's events."""
    index = RuleIndex()
    other = {"chain_id": 1, "registry": "other", "event_type": "Registered", "agent_id": 0}
    identity = {**other, "registry": "identity"}
    index.put(compile_one("r0", {}, None, True))
    assert [r.id for r in index.matching(other)] == ["r0"]
    assert [r.id for r in index.matching(identity)] == ["r0"]
    index.put(compile_one("r0", {"registry": "identity"}, None, True))
    assert index.matching(other) == []
    index.put(compile_one("r0", {}, None, True))
    assert [r.id for r in index.matching(other)] == ["r0"]
    assert [r.id for r in index.matching(identity)] == ["r0"]
