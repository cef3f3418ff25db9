"""The evaluator reads only the event columns some rule names (RuleIndex.event_fields).

What a user must never see: a rule that behaves differently because a column it uses
was not read.
"""

from __future__ import annotations

import pytest

from rules import RuleIndex, build_context
from rules.fields import EVENT_FIELDS
from rules.template_check import CONTEXT_CORE_FIELDS
from tests.unit.rules.rule_helpers import one_rule

ON = {"chain_id", "registry", "event_type"}

# One rule per way a rule can name a column: where (nested), per, when, throttle, templates.
RULES = {
    "where": """
        id: w
        on: {registry: reputation}
        where:
          any:
            - {score: {lt: 30}}
            - not: {tag2: {in: [x, y]}}
          client_address: {exists: true}
        actions: [{rest: {url: 'http://127.0.0.1:9/h'}}]
    """,
    "stateful": """
        id: s
        per: [validator_address]
        when:
          ema: {of: value, window: 3, above: 1}
          change: {of: response_hash}
        throttle: {cooldown: 1h}
        actions: [{rest: {url: 'http://127.0.0.1:9/h'}}]
    """,
    "template": """
        id: t
        actions:
          - telegram: {chat_id: 1, text: "{{ event.metadata_key }} {{ event['file_uri'] }}"}
    """,
    "missing": """
        id: m
        where: {owner: {exists: false}}
        actions: [{rest: {url: 'http://127.0.0.1:9/h'}}]
    """,
}
NAMED = {
    "where": {"score", "tag2", "client_address"},
    "stateful": {"validator_address", "value", "response_hash"},
    "template": {"metadata_key", "file_uri"},
    "missing": {"owner"},
}


@pytest.mark.parametrize("name", list(RULES))
def test_a_rule_reads_what_it_names_and_nothing_else(name):
    rule = one_rule(RULES[name])
    assert rule.event_fields is not None
    assert set(rule.event_fields) == {*CONTEXT_CORE_FIELDS, *ON, *NAMED[name]}
    assert list(rule.event_fields) == [f for f in EVENT_FIELDS if f in rule.event_fields]


def test_a_template_using_the_whole_row_makes_the_engine_read_every_column():
    whole = one_rule(
        "id: x\nactions: [{rest: {url: 'http://127.0.0.1:9/h', body: '{{ event | tojson }}'}}]"
    )
    narrow = one_rule(RULES["where"])
    assert whole.event_fields is None
    assert RuleIndex([narrow, whole]).event_fields is None
    assert set(RuleIndex([narrow]).event_fields) == set(narrow.event_fields)


def test_the_index_reads_the_union_of_its_rules_columns():
    rules = [one_rule(text) for text in RULES.values()]
    fields = RuleIndex(rules).event_fields
    assert set(fields) == {*CONTEXT_CORE_FIELDS, *ON, *set().union(*NAMED.values())}
    assert "token_uri" not in fields and "block_hash" not in fields
    assert set(RuleIndex([]).event_fields) == ON


ROWS = [
    {name: None for name in EVENT_FIELDS}
    | {"id": f"e{i}", "chain_id": 8453, "registry": "reputation", "event_type": "NewFeedback"}
    | {"timestamp": 1_795_600_800 + 60 * i, "agent_id": 7, "block_hash": "0xb"}
    | values
    for i, values in enumerate(
        [
            {"score": 20, "client_address": "0xAa", "tag2": "x", "value": 2},
            {"score": 50, "client_address": "0xaa", "tag2": "z", "value": 5},
            {"score": 10, "client_address": None, "owner": "0x1", "response_hash": "0x9"},
            {"score": 80, "client_address": "0xbb", "validator_address": "0xV", "value": 3},
            {"metadata_key": "k", "file_uri": "ipfs://f", "response_hash": "0x8", "value": 9},
        ]
    )
]


@pytest.mark.parametrize("name", list(RULES))
def test_a_rule_sees_the_same_on_the_columns_read_as_on_the_whole_row(name):
    """Match, step and stored context are identical on the narrowed row, event after
    event with the state carried along: this is what makes skipping columns safe."""
    rule = one_rule(RULES[name])
    full_state = narrow_state = None
    fired = 0
    for row in ROWS:
        narrow = {k: row[k] for k in RuleIndex([rule]).event_fields}
        assert rule.matches(narrow) == rule.matches(row)
        if not rule.matches(row):
            continue
        assert rule.group_key(narrow) == rule.group_key(row)
        full, cut = rule.step(row, full_state), rule.step(narrow, narrow_state)
        assert (cut.fired, cut.suppressed, cut.state) == (full.fired, full.suppressed, full.state)
        full_state, narrow_state = full.state, cut.state
        if full.fired:
            fired += 1
            assert build_context(
                rule, narrow, rule.group_values(narrow), cut.template_state, "T"
            ) == build_context(rule, row, rule.group_values(row), full.template_state, "T")
    assert fired > 0  # each rule fires on some row, so the contexts were compared
