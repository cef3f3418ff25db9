"""What a load shares between rules must never blur two rules: parts equal only in text
are shared, a check skipped for a rule was clean for an identical one, and a rule with
a mistake is reported with its own file, line and id, whatever its neighbours share."""

from __future__ import annotations

import gc
import json

import pytest

from engine.tenant_rules import StoredRule, compile_stored
from rules import load_rules_text
from rules.gc_pause import gc_paused

HOOK = "http://127.0.0.1:9/hook"


def rule(rule_id: str, body: str, *, per: str | None = None, where: str = "{agent_id: 1}") -> str:
    text = (
        f"  - id: {rule_id}\n"
        "    on: {registry: reputation, event_type: NewFeedback}\n"
        f"    where: {where}\n"
    )
    if per is not None:
        text += f"    per: {per}\n"
    return text + f"    actions: [{{rest: {{url: '{HOOK}', body: {body}}}}}]\n"


def load(*rules: str, environ: dict[str, str] | None = None):
    return load_rules_text("rules:\n" + "".join(rules), "rules/a.yaml", environ=environ or {})


def test_rules_differing_in_a_nested_value_share_no_part():
    loaded = load(
        rule("low", "{n: {v: 1}}", where="{score: {lt: 20}}"),
        rule("high", "{n: {v: 2}}", where="{score: {lt: 30}}"),
        rule("flag", "{n: {v: true}}", where="{score: {lt: 30}}"),
        rule("same", "{n: {v: 1}}", where="{score: {lt: 20}}"),
    )
    assert loaded.errors == []
    low, high, flag, same = loaded.rules
    event = {"registry": "reputation", "event_type": "NewFeedback", "score": 25}
    assert [r.matches(event) for r in loaded.rules] == [False, True, True, False]
    bodies = [r.actions[0].raw["body"] for r in loaded.rules]
    assert bodies == [{"n": {"v": 1}}, {"n": {"v": 2}}, {"n": {"v": True}}, {"n": {"v": 1}}]
    assert low.actions is same.actions  # equal text: one compiled part
    assert len({id(high.actions), id(flag.actions), id(low.actions)}) == 3


def test_a_template_check_passed_with_per_is_not_reused_without_it():
    body = "'{{ group.agent_id }}'"
    loaded = load(rule("grouped", body, per="agent_id"), rule("ungrouped", body))
    assert [r.id for r in loaded.rules] == ["grouped"]
    assert [str(e) for e in loaded.errors] == [
        "rules/a.yaml:10 rule 'ungrouped': actions[0].rest.body template uses "
        "'group.agent_id', which does not exist; group has nothing (see per / when)"
    ]


def test_a_mistake_in_one_of_many_equal_rules_names_its_own_line_and_id():
    good = "'{{ event.score }}'"
    loaded = load(
        rule("a", good),
        rule("b", good),
        rule("c", "'{{ event.scor }}'"),
        rule("d", good),
        rule("e", "'{{ event.scor }}'"),
    )
    assert [r.id for r in loaded.rules] == ["a", "b", "d"]
    messages = [str(e) for e in loaded.errors]
    assert len(messages) == 2
    assert messages[0].startswith("rules/a.yaml:13 rule 'c': actions[0].rest.body")
    assert messages[1].startswith("rules/a.yaml:21 rule 'e': actions[0].rest.body")
    assert "event.scor" in messages[0] and "event.scor" in messages[1]


def test_an_expanded_rule_and_its_literal_twin_keep_their_own_documents():
    loaded = load(
        rule("from-env", "'${BODY}'"),
        rule("literal", "x"),
        environ={"BODY": "x"},
    )
    assert loaded.errors == []
    from_env, literal = loaded.rules
    assert from_env.actions[0].raw["body"] == "${BODY}"  # stored as written
    assert literal.actions[0].raw["body"] == "x"
    assert from_env.content_hash != literal.content_hash
    assert from_env.logic_hash == literal.logic_hash


def test_an_unset_variable_is_reported_for_its_rule_only():
    loaded = load(rule("a", "x"), rule("b", "'${NOPE}'"), rule("c", "x"))
    assert [r.id for r in loaded.rules] == ["a", "c"]
    assert [str(e) for e in loaded.errors] == [
        "rules/a.yaml:9 rule 'b': actions[0].rest.body uses ${NOPE}, which is not set in the "
        "environment (set it, or write ${NOPE:-default})"
    ]


def test_stored_rules_compiled_together_keep_their_own_ids_orgs_and_values():
    documents = [
        {"id": "x", "where": {"agent_id": 1}, "actions": [{"rest": {"url": HOOK}}]},
        {"id": "x", "where": {"agent_id": 2}, "actions": [{"rest": {"url": HOOK}}]},
        {"id": "y", "where": {"agent_id": 1}, "actions": [{"rest": {"url": "${HOOK}"}}]},
    ]
    rows = [
        StoredRule(
            id=f"{org}/{doc['id']}",
            org_id=org,
            document=json.dumps(doc),
            content_hash="",
            logic_hash=None,
        )
        for org, doc in zip((1, 2, 1), documents, strict=True)
    ]
    compiled = compile_stored(rows)
    assert compiled["2/x"] is not None and compiled["1/x"] is not None
    assert (compiled["1/x"].id, compiled["1/x"].org_id) == ("1/x", 1)
    assert (compiled["2/x"].id, compiled["2/x"].org_id) == ("2/x", 2)
    assert compiled["1/x"].index_values == frozenset({1})
    assert compiled["2/x"].index_values == frozenset({2})
    assert compiled["1/y"] is None  # a tenant rule never reads the environment


def test_the_gc_pause_nests_and_restores_the_collector():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with pytest.raises(RuntimeError), gc_paused():
            raise RuntimeError("a failed build")
        assert not gc.isenabled()  # the outer build still runs
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()
