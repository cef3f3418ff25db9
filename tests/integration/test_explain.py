"""`engine rules explain` and `backtest --explain` against events a real `engine run`
evaluated: the facts (evaluated or not, action rows) and each step's verdict."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devkit.localstack import PostgresServer, RedisServer
from tests.processes import (
    engine_processes,
    insert_events,
    query_all,
    query_value,
    run_engine,
    wait_until,
    write_config,
)

HOOK = "http://127.0.0.1:9/hook"  # no worker runs: rows stay queued, nothing is sent
RULES = f"""
rules:
  - id: low-score
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{score: {{lt: 50}}}}
    actions: [{{rest: {{url: "{HOOK}", body: {{}}}}}}]
  - id: ema-drop
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{agent_id: 1}}
    per: agent_id
    when: {{ema: {{of: score, window: 3, below: 40}}}}
    actions: [{{rest: {{url: "{HOOK}", body: {{}}}}}}]
  - id: cooled
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{agent_id: 7}}
    throttle: {{cooldown: 1h}}
    actions: [{{rest: {{url: "{HOOK}", body: {{}}}}}}]
  - id: grouped
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{agent_id: 8}}
    group: {{by: [agent_id], wait: 1h}}
    actions: [{{rest: {{url: "{HOOK}", body: {{}}}}}}]
  - id: new-agents
    on: {{registry: identity, event_type: Registered}}
    actions: [{{rest: {{url: "{HOOK}", body: {{}}}}}}]
"""
T0 = int(time.time()) - 3600


def feedback(agent_id: int, score: int, ts: int) -> dict[str, Any]:
    return {
        "registry": "reputation",
        "event_type": "NewFeedback",
        "agent_id": agent_id,
        "score": score,
        "timestamp": ts,
    }


@dataclass
class Scene:
    config: Path
    dsn: str
    ids: dict[str, str]  # name -> event id

    def explain(self, *args: str) -> Any:
        return run_engine(self.config, "rules", "explain", *args)

    def explain_json(self, *args: str) -> dict[str, Any]:
        done = self.explain(*args, "--json")
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer


def _rule(answer: dict[str, Any], rule_id: str) -> dict[str, Any]:
    found = [r for r in answer["rules"] if r["rule"] == rule_id]
    assert found, f"{rule_id} not explained: {[r['rule'] for r in answer['rules']]}"
    return found[0]


def _verdict(rule: dict[str, Any], step: str) -> dict[str, Any]:
    found = [v for v in rule["verdicts"] if v["step"] == step]
    assert found, f"no {step} verdict: {rule['verdicts']}"
    return found[0]


@pytest.fixture(scope="module")
def scene(
    pg_server: PostgresServer,
    template_database: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scene]:
    """Events evaluated by a real `engine run` (then stopped), and one it never saw."""
    name = f"explain_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name, template=template_database)
    directory = tmp_path_factory.mktemp("explain")
    rules = directory / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    config = write_config(
        directory, database_url=dsn, redis_url=redis_server.url(), rules=str(rules)
    )
    events = {
        "high": feedback(1, 90, T0),
        "low": feedback(2, 10, T0 + 1),
        "cool-first": feedback(7, 80, T0 + 2),
        "cool-second": feedback(7, 80, T0 + 12),
        "grouped": feedback(8, 80, T0 + 3),
    }
    try:
        with engine_processes(config, directory, ["run"]):
            for event in events.values():
                insert_events(dsn, [event])
            wait_until(
                lambda: query_value(dsn, "SELECT events FROM engine_cursors") == len(events),
                what="the engine to evaluate every event",
            )
        insert_events(dsn, [feedback(3, 5, T0 + 20)])  # after the engine stopped
        ids = {}
        for key, event in [*events.items(), ("unseen", feedback(3, 5, T0 + 20))]:
            ids[key] = query_value(
                dsn,
                "SELECT id FROM events WHERE agent_id = $1 AND timestamp = $2",
                event["agent_id"],
                event["timestamp"],
            )
        yield Scene(config, dsn, ids)
    finally:
        pg_server.drop_database(name)


def test_a_where_that_rejects_names_the_field_its_value_and_the_expected(scene: Scene) -> None:
    done = scene.explain(scene.ids["high"])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"event {scene.ids['high']}" in text
    assert "evaluated: yes" in text
    block = text.split("rule 'low-score'")[1].split("\nrule ")[0]
    assert "action rows: none for this event" in block
    assert "✗ where: fails: where.score.lt: score is 90, expected lt 50" in block
    assert "would not fire" in block
    # Rules whose `on` differs are left out unless named.
    assert "new-agents" not in text


def test_an_ema_that_does_not_cross_shows_state_before_after_and_threshold(
    scene: Scene,
) -> None:
    ema = _verdict(_rule(scene.explain_json(scene.ids["high"]), "ema-drop"), "when.ema")
    assert ema["outcome"] == "block"
    assert ema["values"]["settings"]["below"] == 40
    assert ema["values"]["state_before"] == {"ema": 90.0, "samples": 1}  # stored by the engine
    assert ema["values"]["state_after"] == {"ema": 90.0, "samples": 2}
    assert ema["values"]["event_value"] == 90
    assert ema["summary"] == (
        "event score = 90; ema = 90.0 (state ema 90.0, samples 1 → ema 90.0, samples 2);"
        " needs below 40 (alpha 0.5, min_samples 1)"
    )


def test_a_throttled_event_says_when_the_rule_last_fired(scene: Scene) -> None:
    second = _rule(scene.explain_json(scene.ids["cool-second"]), "cooled")
    assert second["fired"] is False and second["actions"] == []
    throttle = _verdict(second, "throttle")
    assert throttle["outcome"] == "block"
    assert throttle["values"]["last_fired"] == T0 + 2
    assert f"last fired at {T0 + 2}, 10s before this event; cooldown 3600s" in throttle["summary"]
    # The first one did fire: the facts say so, whatever the state says now.
    first = _rule(scene.explain_json(scene.ids["cool-first"]), "cooled")
    assert [a["status"] for a in first["actions"]] == ["queued"]


def test_a_digest_rule_shows_the_group_holding_the_firing(scene: Scene) -> None:
    rule = _rule(scene.explain_json(scene.ids["grouped"]), "grouped")
    digest = _verdict(rule, "digest")
    assert digest["values"]["group"] == {"agent_id": 8}
    assert digest["values"]["this_event_held"] is True
    assert digest["values"]["pending_firings"] == 1
    assert digest["summary"].startswith("held in group agent_id=8: 1 firing(s) pending")
    assert rule["actions"] == []  # held, not sent yet


def test_a_rule_that_fired_lists_its_action_rows(scene: Scene) -> None:
    done = scene.explain(scene.ids["low"], "--rule", "low-score")
    assert done.returncode == 0, done.stderr
    row_id = query_value(
        scene.dsn, "SELECT id FROM action_results WHERE event_id = $1", scene.ids["low"]
    )
    assert f"fired: 1 action row(s): #{row_id} rest queued" in done.stdout
    assert "✓ where: holds" in done.stdout
    assert "=> would fire" in done.stdout
    assert "ema-drop" not in done.stdout  # --rule: only that one


def test_a_named_rule_whose_on_does_not_match_says_so(scene: Scene) -> None:
    done = scene.explain(scene.ids["low"], "--rule", "new-agents")
    assert done.returncode == 0, done.stderr
    assert (
        "✗ on: does not match: registry is 'reputation', the rule wants 'identity'; "
        "event_type is 'NewFeedback', the rule wants 'Registered'"
    ) in done.stdout
    assert "where" not in done.stdout.split("rule 'new-agents'")[1]


def test_the_json_shape(scene: Scene) -> None:
    answer = scene.explain_json(scene.ids["low"])
    assert set(answer) == {"event", "evaluated", "cursor", "rules"}
    assert answer["event"]["id"] == scene.ids["low"] and answer["evaluated"] is True
    assert answer["cursor"] == "main"
    rule = _rule(answer, "low-score")
    assert set(rule) == {
        "rule",
        "source",
        "fired",
        "actions",
        "would_fire_now",
        "state_updated_at",
        "verdicts",
    }
    assert rule["fired"] is True and rule["would_fire_now"] is True
    assert set(rule["actions"][0]) >= {"id", "action_type", "status", "created_at"}
    assert [v["step"] for v in rule["verdicts"]] == ["on", "where"]
    assert set(rule["verdicts"][0]) == {"step", "outcome", "summary", "values"}


def test_an_event_the_cursor_has_not_passed_says_not_yet(scene: Scene) -> None:
    answer = scene.explain_json(scene.ids["unseen"])
    assert answer["evaluated"] is False
    rule = _rule(answer, "low-score")
    assert rule["fired"] is False and rule["would_fire_now"] is True


def test_unknown_event_or_rule_is_a_clear_error(scene: Scene) -> None:
    done = scene.explain("1-999-999")
    assert done.returncode == 1
    assert "error: no event with id '1-999-999' in the events table" in done.stderr
    done = scene.explain(scene.ids["low"], "--rule", "low-scor")
    assert done.returncode == 1
    assert "error: no rule 'low-scor' (did you mean 'low-score'?)" in done.stderr


def test_explain_reads_only(scene: Scene) -> None:
    def snapshot() -> list[Any]:
        return [
            query_all(scene.dsn, "SELECT trigger_id, group_key, state::text FROM trigger_state"),
            query_all(scene.dsn, "SELECT id, status FROM action_results ORDER BY id"),
            query_all(scene.dsn, "SELECT id FROM digest_firings ORDER BY id"),
            query_all(scene.dsn, "SELECT txid::text, seq FROM engine_cursors"),
        ]

    before = snapshot()
    scene.explain_json(scene.ids["cool-second"])
    scene.explain_json(scene.ids["grouped"])
    assert snapshot() == before


def test_backtest_explain_prints_each_events_verdicts(scene: Scene, tmp_path: Path) -> None:
    rules = tmp_path / "ema.yaml"
    rules.write_text(
        f"""
rules:
  - id: ema-drop
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{agent_id: 7}}
    per: agent_id
    when: {{ema: {{of: score, window: 3, below: 100}}}}
    throttle: {{cooldown: 1h}}
    actions: [{{rest: {{url: "{HOOK}", body: {{}}}}}}]
""",
        encoding="utf-8",
    )
    done = run_engine(scene.config, "rules", "backtest", str(rules), "--explain", "--since", "1d")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    first = out.split(f"event {scene.ids['cool-first']}", 1)[1].split("\nevent ")[0]
    assert "rule 'ema-drop': fires" in first
    assert "✓ when.ema: event score = 80; ema = 80.0 (state fresh → ema 80.0" in first
    assert "-> rest POST" in first
    second = out.split(f"event {scene.ids['cool-second']}", 1)[1].split("\nevent ")[0]
    assert "rule 'ema-drop': suppressed by its throttle" in second
    assert "✗ throttle: suppressed: last fired at" in second
    other = out.split(f"event {scene.ids['low']}", 1)[1].split("\nevent ")[0]
    assert "✗ where: fails: where.agent_id: agent_id is 2, expected eq 7" in other
    assert "ema-drop: 1 firing(s), 1 suppressed" in out


def test_runtime_disable_and_silence_are_steps_too(scene: Scene) -> None:
    added = run_engine(
        scene.config, "silence", "add", "--rule", "low-*", "--for", "1h", "--comment", "upgrade"
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip().splitlines()[-1]
    disabled = run_engine(scene.config, "rules", "disable", "ema-drop", "--comment", "noisy")
    assert disabled.returncode == 0, disabled.stderr
    try:
        low = _rule(scene.explain_json(scene.ids["low"]), "low-score")
        silence = _verdict(low, "silence")
        assert silence["outcome"] == "block"
        assert silence["values"]["silence_id"] == int(silence_id)
        assert silence["values"]["comment"] == "upgrade"
        assert low["would_fire_now"] is False and low["fired"] is True  # it did, before
        ema = _rule(scene.explain_json(scene.ids["high"]), "ema-drop")
        off = _verdict(ema, "disabled")
        assert off["outcome"] == "block" and off["values"]["comment"] == "noisy"
        assert off["values"]["until"] is None
        text = scene.explain(scene.ids["high"], "--rule", "ema-drop").stdout
        assert "disabled at runtime by user:" in text and "until enabled again (noisy)" in text
    finally:
        run_engine(scene.config, "silence", "expire", silence_id)
        run_engine(scene.config, "rules", "enable", "ema-drop")
    after = _rule(scene.explain_json(scene.ids["low"]), "low-score")
    assert [v["step"] for v in after["verdicts"]] == ["on", "where"]
