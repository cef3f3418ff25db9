"""Which silence holds back a firing (rules.silence_match), and the `labels:` it reads."""

from __future__ import annotations

import json

import pytest

from rules import build_context, render_action
from rules.silence_match import Silence, SilenceSet, parse_matcher
from tests.unit.rules.rule_helpers import ACTION, errors_of, one_rule

NOW = 1_800_000_000.0
LABELS = {"severity": "page", "team": "ops", "tier": "1"}


def silence(glob: str = "*", org_id: int | None = None, **matchers: str) -> Silence:
    return Silence(1, org_id, glob, matchers, starts_at=NOW - 60, ends_at=NOW + 60)


def holds(s: Silence, rule_id: str = "agent-drop", org_id: int | None = None, **group: object):
    return s.holds(rule_id, org_id, LABELS, group, NOW)


@pytest.mark.parametrize(
    ("glob", "held"),
    [("*", True), ("agent-*", True), ("agent-drop", True), ("agent-?rop", True),
     ("agent-[dx]rop", True), ("agent", False), ("*-up", False), ("AGENT-*", False)],
)  # fmt: skip
def test_the_rule_glob_is_matched_against_the_whole_id(glob: str, held: bool) -> None:
    assert holds(silence(glob)) is held


def test_every_matcher_must_equal_a_label_or_a_group_value() -> None:
    assert holds(silence(severity="page"), agent_id=42)
    assert holds(silence(severity="page", agent_id="42"), agent_id=42)
    assert not holds(silence(severity="page", agent_id="43"), agent_id=42)
    assert not holds(silence(severity="info"), agent_id=42)
    assert holds(silence(tier="1"))


def test_a_matcher_naming_neither_a_label_nor_a_group_field_never_holds() -> None:
    assert not holds(silence(agent_id="42"))  # the rule has no per: agent_id
    assert not holds(silence(chain_id="8453"), agent_id=42)


def test_labels_come_before_group_values_of_the_same_name() -> None:
    assert holds(silence(team="ops"), team="other")
    assert not holds(silence(team="other"), team="other")


def test_values_compare_as_text_with_hex_folded_and_booleans_spelt() -> None:
    owner = "0xAbCdEf0123456789AbCdEf0123456789AbCdEf01"
    assert holds(silence(owner=owner.upper().replace("0X", "0x")), owner=owner.lower())
    assert holds(silence(flag="true"), flag=True)
    assert not holds(silence(flag="True"), flag=True)


def test_a_silence_holds_only_between_its_start_and_its_end() -> None:
    s = Silence(1, None, "*", {}, starts_at=NOW, ends_at=NOW + 10)
    assert s.holds("r", None, {}, {}, NOW)
    assert s.holds("r", None, {}, {}, NOW + 9.99)
    assert not s.holds("r", None, {}, {}, NOW + 10)
    assert not s.holds("r", None, {}, {}, NOW - 0.01)


def test_an_organizations_silence_holds_only_its_own_rules_by_the_ids_it_wrote() -> None:
    theirs = silence("low-*", org_id=7)
    assert holds(theirs, "7/low-feedback", org_id=7)
    assert not holds(theirs, "8/low-feedback", org_id=8)
    assert not holds(theirs, "low-feedback")  # the operator's file rule
    assert not holds(silence("7/*", org_id=7), "7/low-feedback", org_id=7)


def test_the_operators_silence_reads_engine_wide_ids() -> None:
    assert holds(silence("*"), "7/low-feedback", org_id=7)
    assert holds(silence("7/*"), "7/low-feedback", org_id=7)
    assert not holds(silence("low-*"), "7/low-feedback", org_id=7)


def test_the_set_names_the_oldest_silence_holding_and_reads_the_query_json() -> None:
    rows = [
        {"id": 3, "org_id": None, "rule_glob": "x-*", "matchers": {}, "starts_at": NOW - 1,
         "ends_at": NOW + 1},
        {"id": 5, "org_id": None, "rule_glob": "agent-*", "matchers": {"agent_id": "42"},
         "starts_at": NOW - 1, "ends_at": NOW + 1},
        {"id": 9, "org_id": 4, "rule_glob": "*", "matchers": {}, "starts_at": NOW - 1,
         "ends_at": NOW + 1},
    ]  # fmt: skip
    found = SilenceSet.from_json(json.dumps(rows))
    assert len(found) == 3 and found
    assert found.holding("agent-drop", None, {}, {"agent_id": 42}, NOW) == 5
    assert found.holding("agent-drop", None, {}, {"agent_id": 41}, NOW) is None
    # The operator's 'agent-*' does not match the engine-wide '4/agent-drop'; org 4's does.
    assert found.holding("4/agent-drop", 4, {}, {"agent_id": 42}, NOW) == 9
    assert not SilenceSet.from_json("[]")


def test_a_matcher_is_name_equals_value() -> None:
    assert parse_matcher("agent_id=42") == ("agent_id", "42")
    assert parse_matcher(" note = a=b ") == ("note", "a=b")
    for bad in ("agent_id", "=42", ""):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            parse_matcher(bad)


def test_labels_reach_the_template_context_as_text() -> None:
    rule = one_rule(
        "id: r\nlabels: {severity: page, tier: 1, on_call: true}\n"
        "actions: [{rest: {url: 'http://x', body: {s: '{{ rule.labels.severity }}',"
        " t: '{{ rule.labels.tier }}'}}}]"
    )
    assert dict(rule.labels) == {"severity": "page", "tier": "1", "on_call": "true"}
    context = build_context(rule, {"agent_id": 1}, {}, {}, "T")
    assert context["rule"]["labels"] == {"severity": "page", "tier": "1", "on_call": "true"}
    rendered = render_action("rest", rule.actions[0].raw, context)
    assert rendered["body"] == {"s": "page", "t": "1"}


def test_a_rule_without_labels_has_an_empty_mapping_in_its_context() -> None:
    rule = one_rule("id: r\n" + ACTION)
    assert build_context(rule, {}, {}, {}, "T")["rule"]["labels"] == {}


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("[a, b]", "labels must be a mapping of name: value"),
        ("{bad-name: x}", "labels has a name that is not letters, digits and _"),
        ("{1abc: x}", "labels has a name that is not letters"),
        ("{score: 1.5}", "labels.score must be a string, number or boolean (got 1.5)"),
        ("{owner: null}", "labels.owner must be a string, number or boolean (got None)"),
        ("{note: [x]}", "labels.note must be a string, number or boolean"),
    ],
)
def test_malformed_labels_are_reported_with_file_line_and_rule(labels: str, message: str) -> None:
    errors = errors_of(f"rules:\n  - id: r\n    labels: {labels}\n    {ACTION}\n")
    assert len(errors) == 1
    assert errors[0].startswith("rules/test.yaml:3 rule 'r': ")
    assert message in errors[0]


def test_a_template_naming_an_unknown_rule_attribute_is_refused() -> None:
    errors = errors_of(
        "rules:\n  - id: r\n    actions: [{rest: {url: 'http://x/{{ rule.lables.a }}'}}]\n"
    )
    assert errors and "lables" in errors[0]
