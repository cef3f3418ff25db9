"""content_hash covers the whole document; logic_hash only what decides state."""

from __future__ import annotations

import json

from tests.unit.rules.rule_helpers import one_rule

BASE = """\
id: h
description: {description}
on: {{registry: reputation}}
where: {{agent_id: {agent}}}
per: agent_id
when: {{ema: {{of: score, window: 10, below: 60}}}}
throttle: {{cooldown: {cooldown}}}
actions: [{{rest: {{url: '{url}', secret: '${{SECRET:-x}}'}}}}]
"""


def rule(**overrides):
    values = {"description": "d", "agent": 42, "cooldown": "30m", "url": "http://a"}
    values.update(overrides)
    return one_rule(BASE.format(**values), environ={"SECRET": "top"})


def test_actions_throttle_description_keep_the_logic_hash():
    base = rule()
    for changed in (rule(url="http://b"), rule(cooldown="1h"), rule(description="other")):
        assert changed.logic_hash == base.logic_hash
        assert changed.content_hash != base.content_hash


def test_where_changes_the_logic_hash():
    assert rule(agent=7).logic_hash != rule().logic_hash


def test_document_is_json_and_keeps_variables_unexpanded():
    doc = rule().document
    assert json.loads(json.dumps(doc)) == doc
    assert doc["actions"][0]["rest"]["secret"] == "${SECRET:-x}"
    assert rule().content_hash == rule().content_hash
