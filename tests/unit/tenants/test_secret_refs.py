"""``{secret: NAME}`` in rule files: accepted wherever a credential goes, refused elsewhere and
when malformed, by the compiler and by the shipped JSON Schema alike."""

from __future__ import annotations

import jsonschema
import pytest

from rules import load_rules_text, rule_file_schema
from rules.action_specs import secret_refs
from rules.yaml_source import parse_yaml

ACCEPTED = """
rules:
  - id: tenant
    actions:
      - rest:
          url: https://hooks.example/a
          headers: {Authorization: {secret: API_TOKEN, prefix: "Bearer "}, Accept: text/plain}
          secret: {secret: SIGNING}
      - telegram: {chat_id: 1, text: hi, bot_token: {secret: BOT}}
      - mcp: {url: https://mcp.example/mcp, tool: notify, token: {secret: MCP.token}}
"""


def _errors(text: str) -> list[str]:
    return [str(e) for e in load_rules_text(text, "t.yaml", environ={}).errors]


def _schema_errors(text: str) -> list[str]:
    validator = jsonschema.Draft7Validator(rule_file_schema())
    return [e.message for e in validator.iter_errors(parse_yaml(text).data)]


def test_the_credential_places_take_a_secret() -> None:
    assert _errors(ACCEPTED) == []
    assert _schema_errors(ACCEPTED) == []
    (rule,) = load_rules_text(ACCEPTED, "t.yaml", environ={}).rules
    found = [(a.kind, place) for a in rule.actions for place, _ in secret_refs(a.kind, a.raw)]
    assert found == [
        ("rest", ("secret",)),
        ("rest", ("headers", "Authorization")),
        ("telegram", ("bot_token",)),
        ("mcp", ("token",)),
    ]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            "{rest: {url: 'https://a.example', secret: {secret: 9lives}}}",
            "actions[0].rest.secret.secret must name a secret",
        ),
        (
            "{rest: {url: 'https://a.example', headers: {A: {secret: X, suffix: y}}}}",
            "actions[0].rest.headers.A.suffix is not a known key",
        ),
        (
            "{mcp: {url: 'https://a.example', tool: t, token: {secret: X, prefix: 3}}}",
            "actions[0].mcp.token.prefix must be a string",
        ),
        (
            "{rest: {url: {secret: URL}}}",
            "actions[0].rest.url must be a string",
        ),
        (
            "{telegram: {chat_id: 1, text: t, bot: default, bot_token: {secret: B}}}",
            "has both bot and bot_token",
        ),
    ],
)
def test_a_misplaced_or_malformed_secret_is_an_error_naming_the_place(
    action: str, message: str
) -> None:
    text = f"rules: [{{id: r, actions: [{action}]}}]"
    errors = _errors(text)
    assert any(message in e for e in errors), errors
    assert errors[0].startswith("t.yaml:1 rule 'r': ")
    assert _schema_errors(text)
