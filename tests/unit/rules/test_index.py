"""RuleIndex: same answers as trying every rule, in load order, whatever the rules and events."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rules import RuleIndex, load_rules_text

CHAINS = [1, 8453, 84532]
REGISTRIES = ["identity", "reputation", "validation"]
TYPES = ["Registered", "NewFeedback", "ValidationResponse"]
ADDRESSES = ["0xAA", "0xaa", "0xBB", "0xcc"]
ACTION = [{"rest": {"url": "http://127.0.0.1:9/hook"}}]


def one_or_list(options):
    return st.one_of(
        st.sampled_from(options),
        st.lists(st.sampled_from(options), min_size=1, max_size=2, unique=True),
    )


matchers = st.one_of(
    st.fixed_dictionaries({"agent_id": st.integers(1, 4)}),
    st.fixed_dictionaries(
        {
            "agent_id": st.fixed_dictionaries(
                {"in": st.lists(st.integers(1, 4), min_size=1, max_size=3)}
            )
        }
    ),
    st.fixed_dictionaries({"client_address": st.sampled_from(ADDRESSES)}),
    st.fixed_dictionaries(
        {"validator_address": st.fixed_dictionaries({"eq": st.sampled_from(ADDRESSES)})}
    ),
    st.fixed_dictionaries({"score": st.fixed_dictionaries({"lt": st.integers(0, 100)})}),
    st.fixed_dictionaries({"tag1": st.sampled_from(["a", "b"])}),
    st.fixed_dictionaries({"tag1": st.fixed_dictionaries({"ne": st.sampled_from(["a", "b"])})}),
)
wheres = st.one_of(
    st.none(),
    matchers,
    st.lists(matchers, min_size=1, max_size=3),
    st.builds(lambda a, b: {"any": [a, b]}, matchers, matchers),
    st.builds(lambda a: {"not": a}, matchers),
)
ons = st.fixed_dictionaries(
    {},
    optional={
        "chain_id": one_or_list(CHAINS),
        "registry": one_or_list(REGISTRIES),
        "event_type": one_or_list(TYPES),
    },
)
rule_specs = st.lists(st.tuples(ons, wheres, st.booleans()), min_size=1, max_size=25)
events = st.fixed_dictionaries(
    {
        "chain_id": st.one_of(st.sampled_from(CHAINS), st.none(), st.just("8453"), st.just([1])),
        "registry": st.one_of(st.sampled_from(REGISTRIES), st.just("other"), st.none()),
        "event_type": st.sampled_from(TYPES),
        "agent_id": st.one_of(st.integers(0, 5), st.none(), st.just("1"), st.just(True)),
        "client_address": st.one_of(st.sampled_from(ADDRESSES), st.none(), st.just(["0xaa"])),
        "validator_address": st.one_of(st.sampled_from(ADDRESSES), st.none()),
        "score": st.one_of(st.integers(0, 100), st.none(), st.just("x")),
        "tag1": st.one_of(st.sampled_from(["a", "b", "c"]), st.none()),
    }
)


def compile_rules(specs):
    rules = []
    for i, (on, where, enabled) in enumerate(specs):
        rule = {"id": f"r{i}", "enabled": enabled, "on": on, "actions": ACTION}
        if where is not None:
            rule["where"] = where
        rules.append(rule)
    result = load_rules_text(json.dumps({"rules": rules}), "gen.yaml", environ={})
    assert [str(e) for e in result.errors] == []
    return result.rules


@settings(max_examples=200, deadline=None)
@given(rule_specs, st.lists(events, min_size=1, max_size=20))
def test_index_equals_brute_force(specs, stream):
    rules = compile_rules(specs)
    index = RuleIndex(rules)
    assert len(index) == sum(r.enabled for r in rules)
    for event in stream:
        brute = [r for r in rules if r.enabled and r.matches(event)]
        assert index.matching(event) == brute


def test_many_rules_on_one_key_discriminate_by_agent_id():
    specs = [({"registry": "reputation"}, {"agent_id": i}, True) for i in range(2000)]
    specs.append(({"registry": "reputation"}, {"score": {"lt": 10}}, True))
    index = RuleIndex(compile_rules(specs))
    found = index.matching({"registry": "reputation", "agent_id": 1500, "score": 5})
    assert [r.id for r in found] == ["r1500", "r2000"]
    assert index.matching({"registry": "identity", "agent_id": 1500}) == []


def test_keyed_rules_skip_only_the_equality_they_were_found_by():
    specs = [
        ({}, {"agent_id": 1}, True),
        ({}, [{"agent_id": {"in": [1, 2]}}, {"score": {"lt": 5}}], True),
        ({}, {"agent_id": {"eq": 1, "ne": 3}}, True),
        ({}, {"client_address": "0xAB", "tag1": "x"}, True),
    ]
    rules = compile_rules(specs)
    assert [r.index_key for r in rules] == ["agent_id", "agent_id", "agent_id", "client_address"]
    index = RuleIndex(rules)

    def ids(event):
        return [r.id for r in index.matching(event)]

    assert ids({"agent_id": 1, "score": 1}) == ["r0", "r1", "r2"]
    assert ids({"agent_id": 1.0, "score": 9}) == ["r0", "r2"]
    assert ids({"agent_id": True, "score": 1}) == []  # True hashes like 1 but is no agent id
    assert ids({"agent_id": "1", "score": 1}) == []
    assert ids({"client_address": "0xab", "tag1": "x"}) == ["r3"]
    assert ids({"client_address": "0xab", "tag1": "y"}) == []
