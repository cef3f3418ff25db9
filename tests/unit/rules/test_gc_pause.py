"""The rule set may be frozen out of the cyclic collector's view (rules.gc_pause) only
because compiled rules hold no reference cycles: a replaced or removed rule must be
freed by reference counting alone, frozen or not."""

from __future__ import annotations

import gc
from pathlib import Path

from rules import RuleIndex, load_rules

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "rules"


def _cyclic_garbage_left_by(build) -> int:  # type: ignore[no-untyped-def]
    gc.collect()
    gc.disable()
    try:
        build()
        return gc.collect()  # what reference counting could not free
    finally:
        gc.enable()


def test_compiled_indexed_and_removed_rules_leave_no_cyclic_garbage():
    def build() -> None:
        result = load_rules([EXAMPLES], environ={}, bot_names={"default"})
        assert result.rules and not result.errors
        index = RuleIndex(result.rules)
        for rule in result.rules[::2]:
            index.remove(rule.id)
        for rule in result.rules[1::2]:
            index.put(rule)  # replaced by itself: the old entries are dropped

    assert _cyclic_garbage_left_by(build) == 0


def test_the_probe_sees_a_cycle():
    def build() -> None:
        a: dict[str, object] = {}
        a["self"] = a

    assert _cyclic_garbage_left_by(build) >= 1
