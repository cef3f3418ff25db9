"""The demo stream of ``engine up --demo`` makes every example rule fire (offline: the
example rules evaluated over the stream, with event time advancing as it would live)."""

from __future__ import annotations

import random
from collections import Counter

from devkit.demo import DemoStream
from devkit.up import DEMO_INTERVAL_S
from engine.emit import build_event
from rules import load_rules
from rules.evaluate import evaluate_stream
from rules.index import RuleIndex
from rules.model import Advance
from rules.testing import evaluate_test_steps
from tests.processes import ROOT

START = 1_764_000_000
EVENTS = 1200  # an hour of demo at one event every 3 s


def _stream(seed: int) -> list[dict[str, object]]:
    stream = DemoStream(random.Random(seed))
    events = []
    for i in range(EVENTS):
        registry, event_type, fields = stream.next_event()
        when = START + int(i * DEMO_INTERVAL_S)
        fields = {**fields, "timestamp": when, "block_number": when, "log_index": 0}
        events.append(build_event(registry, event_type, fields))
    return events


def test_every_example_rule_fires_within_an_hour_of_demo() -> None:
    loaded = load_rules([ROOT / "examples" / "rules"], environ={}, bot_names={"default"})
    assert not loaded.errors
    index = RuleIndex(list(loaded.rules))
    for seed in (1, 2, 3):
        events = _stream(seed)
        fired = Counter(f.rule.id for f in evaluate_stream(index, events, {}) if f.step.fired)
        # Rules that fire on time passing (absence) fire by the end of the hour.
        end = [*events, Advance(0, int(events[-1]["timestamp"]))]
        for rule in (r for r in loaded.rules if r.absence is not None):
            fired[rule.id] += sum(f.step.fired for f in evaluate_test_steps(rule, end))
        silent = {rule.id for rule in loaded.rules} - {r for r, n in fired.items() if n}
        assert not silent, f"seed {seed}: never fired: {sorted(silent)}"


def test_the_stream_is_reproducible_and_ids_are_unique() -> None:
    one, two = DemoStream(random.Random(7)), DemoStream(random.Random(7))
    assert [one.next_event() for _ in range(50)] == [two.next_event() for _ in range(50)]
    ids = [event["id"] for event in _stream(5)]
    assert len(ids) == len(set(ids))
