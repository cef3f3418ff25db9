"""One definition of an action row: ActionRow's fields are the COPY's columns and the
insert_actions query's, in the same order, and the rows the evaluator builds follow it."""

from __future__ import annotations

import re

from engine.action_rows import ActionRow, PendingActionRows, shared_fields
from rules import load_rules_text
from sql import query


def _names(text: str) -> list[str]:
    return [name.strip().split("::")[0] for name in text.split(",")]


def test_the_insert_query_takes_the_fields_of_an_action_row_in_order() -> None:
    text = query("insert_actions")
    insert = re.search(r"INSERT INTO action_results \((.*?)\)", text, re.DOTALL)
    select = re.search(r"SELECT (.*?)\s+FROM unnest", text, re.DOTALL)
    unnest = re.search(r"FROM unnest\((.*?)\)\s+AS u\((.*?)\)", text, re.DOTALL)
    assert insert and select and unnest
    fields = list(ActionRow._fields)
    assert _names(insert.group(1)) == fields
    assert _names(select.group(1)) == fields
    assert _names(unnest.group(2)) == fields
    assert _names(unnest.group(1)) == [f"${n}" for n in range(1, len(fields) + 1)]


def test_a_pending_row_is_an_action_row_in_field_order() -> None:
    loaded = load_rules_text(
        "rules:\n  - id: r\n    actions:\n"
        '      - name: hook\n        rest: {url: "http://127.0.0.1:9/x"}\n'
        "        retry: {attempts: 4, backoff: 3s}\n",
        "inline.yaml",
        environ={},
    )
    rule = loaded.rules[0]
    action = rule.actions[0]
    pending = PendingActionRows()
    pending.add(rule, action, 42, '{"c":1}')
    pending.add(rule, action, None, "{}")
    first = ActionRow(*pending.rows[0])
    assert first.trigger_id == "r" and first.action_index == 0
    assert (first.action_type, first.action_name) == ("rest", "hook")
    assert (first.max_attempts, first.backoff_s) == (4, 3.0)
    assert first.spec.startswith("{") and '"url"' in first.spec
    assert (first.event_id, first.context) == ("42", '{"c":1}')
    assert ActionRow(*pending.rows[1]).event_id is None
    assert pending.rows[0][: len(shared_fields(rule, action))] == shared_fields(rule, action)
    # the INSERT's arrays: one per field, each as long as the rows
    columns = pending.columns()
    assert len(columns) == len(ActionRow._fields)
    assert columns[ActionRow._fields.index("event_id")] == ["42", None]
