"""Every mistake category is a RuleError naming file:line, the rule id and what was expected."""

from __future__ import annotations

import time

import pytest

from rules import load_rules, load_rules_text
from rules.where import MAX_WHERE_DEPTH
from tests.unit.rules.rule_helpers import errors_of, load

HEAD = """\
rules:
  - id: agent-42-drop
    on: {registry: reputation}
"""
REST = "    actions: [{rest: {url: 'http://127.0.0.1:9/hook'}}]\n"


def single_error(text: str, **kwargs) -> str:
    errors = errors_of(text, **kwargs)
    assert len(errors) == 1, errors
    return errors[0]


def test_yaml_syntax_error_names_the_line():
    text = "rules:\n  - id: a\n    where: {score: [1, 2}\n"
    assert single_error(text).startswith("rules/test.yaml:3: YAML syntax error:")


def test_bad_window_reads_like_advice():
    text = HEAD + "    when:\n      ema: {of: score, window: -3, below: 60}\n" + REST
    assert single_error(text) == (
        "rules/test.yaml:5 rule 'agent-42-drop': when.ema.window must be a positive integer "
        "(got -3)"
    )


def test_unknown_key_suggests_the_near_miss():
    text = HEAD + "    wehre: {agent_id: 1}\n" + REST
    assert single_error(text).startswith(
        "rules/test.yaml:4 rule 'agent-42-drop': wehre is not a known key (did you mean 'where'?)"
    )


def test_unknown_field_and_operator_suggest():
    text = HEAD + "    where:\n      agnet_id: 1\n      score: {lte: 5}\n" + REST
    assert errors_of(text) == [
        "rules/test.yaml:5 rule 'agent-42-drop': where.agnet_id is not an event field "
        "(did you mean 'agent_id'?)",
        "rules/test.yaml:6 rule 'agent-42-drop': where.score.lte is not an operator "
        "(did you mean 'le'?)",
    ]


def test_type_mismatch_is_a_load_error():
    text = HEAD + '    where: {score: {lt: "abc"}}\n' + REST
    assert single_error(text) == (
        "rules/test.yaml:4 rule 'agent-42-drop': where.score.lt must be a number to compare "
        "with score (got 'abc')"
    )


def test_null_operand_points_at_exists():
    text = HEAD + "    where: {tag1: {eq: null}}\n" + REST
    assert "use `exists: false`" in single_error(text)


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("0s", "must be a positive duration (got '0s')"),
        ("-5m", "must be a positive duration (got '-5m')"),
        ("10x", "must be a duration like 30s, 15m, 2h or 7d (got '10x')"),
        ("5", "must be a duration like 30s, 15m, 2h or 7d (got 5)"),
    ],
)
def test_bad_durations(duration, message):
    text = HEAD + f"    throttle:\n      cooldown: {duration}\n" + REST
    assert single_error(text) == (
        f"rules/test.yaml:5 rule 'agent-42-drop': throttle.cooldown {message}"
    )


def test_bad_regex():
    text = HEAD + "    where: {tag1: {matches: '(unclosed'}}\n" + REST
    assert single_error(text).startswith(
        "rules/test.yaml:4 rule 'agent-42-drop': where.tag1.matches is not a valid regular "
        "expression: missing ), unterminated subpattern"
    )


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(a)\1", r"invalid escape sequence: \1"),
        ("(?=a)b", "invalid perl operator: (?="),
        ("(?<!a)b", "invalid perl operator: (?<!"),
    ],
)
def test_regex_the_linear_engine_cannot_run_is_refused(pattern, problem, capfd):
    text = HEAD + f"    where: {{tag1: {{matches: '{pattern}'}}}}\n" + REST
    assert single_error(text) == (
        "rules/test.yaml:4 rule 'agent-42-drop': where.tag1.matches uses what the linear-time "
        f"regular expression engine (RE2) cannot run: {problem} (backreferences, lookahead and "
        "lookbehind are not supported)"
    )
    assert capfd.readouterr().err == ""  # loading rules does no I/O


def test_template_syntax_error_and_unknown_names():
    text = HEAD + (
        "    actions:\n"
        "      - telegram:\n"
        "          chat_id: 1\n"
        "          text: '{% if %}'\n"
        "      - rest:\n"
        "          url: http://127.0.0.1:9/hook\n"
        "          body: {a: '{{ evnt.score }}', b: '{{ event.scroe }}', c: '{{ state.ema }}',\n"
        "                 d: '{{ x | nofilter }}'}\n"
    )
    assert errors_of(text) == [
        "rules/test.yaml:7 rule 'agent-42-drop': actions[0].telegram.text template error on "
        "its line 1: Expected an expression, got 'end of statement block'",
        "rules/test.yaml:10 rule 'agent-42-drop': actions[1].rest.body.a template uses 'evnt', "
        "which is not in the template context (did you mean 'event'?); use one of event, rule, "
        "group, state, fired_at",
        "rules/test.yaml:10 rule 'agent-42-drop': actions[1].rest.body.b template uses "
        "'event.scroe', which does not exist (did you mean 'score'?); event has id, chain_id, "
        "block_number, block_hash, transaction_hash, log_index, registry, event_type, agent_id, "
        "timestamp, owner...",
        "rules/test.yaml:10 rule 'agent-42-drop': actions[1].rest.body.c template uses "
        "'state.ema', which does not exist; state has nothing (see per / when)",
        "rules/test.yaml:11 rule 'agent-42-drop': actions[1].rest.body.d template error on its "
        "line 1: No filter named 'nofilter'.",
    ]


def test_loop_variables_are_not_unknown_names():
    text = HEAD + (
        "    actions:\n      - telegram:\n          chat_id: 1\n"
        "          text: '{% for k, v in event.items() %}{{ k }}={{ v }}{% endfor %}"
        "{% set n = 3 %}{{ n }}{{ range(2) | list }}'\n"
    )
    assert errors_of(text) == []


def test_unknown_bot():
    text = HEAD + "    actions:\n      - telegram: {chat_id: 1, text: hi, bot: ops}\n"
    assert single_error(text, bot_names={"default"}) == (
        "rules/test.yaml:5 rule 'agent-42-drop': actions[0].telegram.bot 'ops' is not a bot "
        "under telegram.bots in the config (known: default)"
    )
    assert errors_of(text) == []  # without a config there is nothing to check against


def test_unset_variable_is_reported_and_document_keeps_it_unexpanded():
    text = HEAD + ("    actions:\n      - rest: {url: '${HOOK}', secret: '${SECRET}'}\n")
    assert errors_of(text, environ={"HOOK": "http://x"}) == [
        "rules/test.yaml:5 rule 'agent-42-drop': actions[0].rest.secret uses ${SECRET}, which "
        "is not set in the environment (set it, or write ${SECRET:-default})"
    ]
    result = load(text, environ={"HOOK": "http://x", "SECRET": "s3"})
    (rule,) = result.rules
    assert rule.actions[0].raw == {"url": "${HOOK}", "secret": "${SECRET}"}
    assert "s3" not in str(rule.document)


def test_duplicate_ids_across_files(tmp_path):
    body = "rules:\n  - id: same\n    actions: [{rest: {url: 'http://x'}}]\n"
    (tmp_path / "a.yaml").write_text(body)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text("# comment\n" + body)
    (tmp_path / "ignored.txt").write_text("not yaml")
    result = load_rules([tmp_path], environ={})
    assert [str(e) for e in result.errors] == [
        f"{tmp_path}/sub/b.yml:3 rule 'same': id 'same' is already used at "
        f"{tmp_path}/a.yaml:2; rule ids must be unique across all files"
    ]
    assert len(result.rules) == 1
    assert result.files == [str(tmp_path / "a.yaml"), str(tmp_path / "sub" / "b.yml")]


def test_missing_path_and_wrong_top_level():
    result = load_rules(["/nonexistent/rules.yaml"], environ={})
    assert [str(e) for e in result.errors] == ["/nonexistent/rules.yaml: no such file or directory"]
    assert errors_of("- id: x\n") == [
        "rules/test.yaml:1: expected a mapping with `rules:` holding a list of rules"
    ]


def test_every_error_is_collected_not_only_the_first():
    text = (
        "rules:\n"
        "  - id: Bad_ID\n"
        "    actions: []\n"
        "  - id: ok\n"
        "    when: {ema: {of: tag1, window: 3, below: 1}, count: {within: 1h}}\n"
        "    throttle: {max: 3}\n"
        "    actions: [{rest: {url: 'ftp://x'}, retry: {attempts: 0}}]\n"
    )
    errors = errors_of(text)
    assert errors == [
        "rules/test.yaml:2 rule 'Bad_ID': id must match [a-z0-9][a-z0-9._-]* (lower case, "
        "at most 200 characters; got 'Bad_ID')",
        "rules/test.yaml:3 rule 'Bad_ID': actions must be a non-empty list of actions (got [])",
        "rules/test.yaml:5 rule 'ok': when.ema.of must name a numeric field; tag1 holds text",
        "rules/test.yaml:5 rule 'ok': when.count needs one of at_least, more_than, at_most, "
        "exactly",
        "rules/test.yaml:6 rule 'ok': throttle max and within go together: `max: 5, within: 1h`",
        "rules/test.yaml:7 rule 'ok': actions[0].retry.attempts must be a positive integer (got 0)",
        "rules/test.yaml:7 rule 'ok': actions[0].rest.url must be an http:// or https:// URL "
        "(got 'ftp://x')",
    ]


def test_yaml_11_booleans_are_not_special():
    # `on:` must stay a key (YAML 1.1 would read it as true).
    result = load(
        "rules:\n  - id: a\n    on: {registry: identity}\n"
        "    actions: [{rest: {url: 'http://x'}}]\n"
    )
    assert not result.errors
    assert result.rules[0].on == {"registry": frozenset({"identity"})}


def test_nesting_too_deep_is_reported_with_its_line():
    spec = "{any: [" * 40 + "{score: 1}" + "]}" * 40
    text = "rules:\n  - id: deep\n    where: " + spec + "\n" + REST
    errors = errors_of(text)
    assert errors == [
        f"rules/test.yaml:3 rule 'deep': where.any[0].any[0].any[0].any[0].any[0].any[0].any[0]"
        f".any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0]"
        f".any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0].any[0]"
        f".any[0].any[0] nests any/all/not deeper than {MAX_WHERE_DEPTH} levels"
    ]


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_hostile_nesting_is_bounded(depth):
    spec = "{not: " * depth + "{score: 1}" + "}" * depth
    started = time.monotonic()
    errors = errors_of("rules:\n  - id: deep\n    where: " + spec + "\n" + REST)
    assert len(errors) == 1
    assert "nesting" in errors[0] or "deeper than" in errors[0]
    assert time.monotonic() - started < 5


def test_block_style_deep_nesting_is_bounded():
    lines = ["rules:", "  - id: deep", "    where:"]
    for level in range(1000):
        lines.append("  " * (level + 3) + "not:")
    lines.append("  " * 1003 + "score: 1")
    errors = errors_of("\n".join(lines) + "\n" + REST)
    # libyaml stops at its own limit first; either way a one-line error, no crash.
    assert len(errors) == 1
    assert "maximum nesting depth" in errors[0] or "deeper than" in errors[0]


def test_ten_thousand_conditions_is_a_clear_error():
    spec = "{all: [" + ", ".join(f"{{score: {{ne: {i}}}}}" for i in range(10_000)) + "]}"
    started = time.monotonic()
    errors = errors_of("rules:\n  - id: wide\n    where: " + spec + "\n" + REST)
    assert time.monotonic() - started < 5
    assert errors == [
        "rules/test.yaml:3 rule 'wide': where.all[1000].score the rule has more than 1000 "
        "matchers; split it"
    ]


def test_huge_file_is_refused_without_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("rules:\n" + "# padding\n" * 1_100_000)
    started = time.monotonic()
    result = load_rules([path], environ={})
    assert time.monotonic() - started < 2
    assert [str(e) for e in result.errors] == [f"{path}:1: file is larger than 4194304 bytes"]
    text_result = load_rules_text("x" * 5_000_000, "big.yaml", environ={})
    assert [str(e) for e in text_result.errors] == ["big.yaml:1: file is larger than 4194304 bytes"]


def test_alias_bomb_is_bounded():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("rules: [*a8]")
    started = time.monotonic()
    errors = errors_of("\n".join(lines) + "\n")
    assert time.monotonic() - started < 10
    # Refused by the per-key cap on aliased values before the whole-file cap is reached.
    assert errors and "values through YAML aliases" in errors[0]


def test_no_traceback_for_garbage():
    for garbage in [
        "",
        "\x00\x01",
        "rules: 5",
        "rules: [5, null, [1]]",
        ":::",
        "!!python/object:os.system {}",
    ]:
        for error in errors_of(garbage):
            assert "Traceback" not in error
            assert error.startswith("rules/test.yaml")


def test_block_nesting_past_the_yaml_depth_cap_is_one_error():
    lines = ["rules:", "  - id: deep", "    where:"]
    for level in range(300):
        lines.append("  " * (level + 3) + "not:")
    lines.append("  " * 303 + "score: 1")
    assert errors_of("\n".join(lines) + "\n" + REST) == [
        "rules/test.yaml:102: nesting deeper than 100 levels"
    ]


def test_a_shared_template_is_checked_against_each_rules_own_names():
    # Template checks are cached by text; the cache must still tell `per` apart.
    template = (
        "    actions: [{rest: {url: 'http://127.0.0.1:9/hook', body: '{{ group.agent_id }}'}}]\n"
    )
    text = (
        "rules:\n  - id: grouped\n    per: agent_id\n" + template + "  - id: ungrouped\n" + template
    )
    assert errors_of(text) == [
        "rules/test.yaml:6 rule 'ungrouped': actions[0].rest.body template uses "
        "'group.agent_id', which does not exist; group has nothing (see per / when)",
    ]
