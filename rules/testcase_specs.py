"""Parse a rule's `tests:` block into RuleTests with complete, ready-to-evaluate events.

Missing `chain_id`, `registry`, `event_type` default to the rule's first `on` values; a
missing `timestamp` is one second after the previous event (the first is TEST_START_S);
`"+N"` is N seconds after the previous event.  An `{advance: DURATION}` step moves the
clock on without an event (rules.time_driven): the next event without a timestamp is one
second after the advanced clock.  A test that begins with an advance starts at
TEST_START_S.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from rules.durations import DurationError, parse_duration
from rules.fields import EVENT_FIELDS, suggest
from rules.model import Advance, RenderExpectation, RuleTest
from rules.reporting import Problems, shown
from rules.shapes import check_keys, mapping_at
from rules.yaml_source import Path

#: 2026-01-01 00:00:00 UTC: a fixed, readable start so rendered times are stable.
TEST_START_S: Final = 1_767_225_600
MAX_TEST_EVENTS: Final = 10_000
_RELATIVE = re.compile(r"^\+(\d+)$")


@dataclass(frozen=True)
class TestedRule:
    """What a rule's tests may refer to besides its events: its actions' names, its
    `resolve` actions' names (None: no `resolve`), whether it has `group`."""

    action_names: list[str | None]
    resolve_action_names: list[str | None] | None = None
    grouped: bool = False


def tested_rule(spec: Mapping[str, Any], action_names: list[str | None]) -> TestedRule:
    """What the tests of the rule mapping ``spec`` (``${VAR}`` expanded) may refer to; a
    `group` or `resolve` with mistakes still counts (they are reported on their own)."""
    resolve = spec.get("resolve")
    resolve_names = None
    if "resolve" in spec:
        actions = resolve.get("actions") if isinstance(resolve, Mapping) else None
        resolve_names = [
            a.get("name") if isinstance(a, Mapping) else None
            for a in (actions if isinstance(actions, list) else [])
        ]
    return TestedRule(action_names, resolve_names, grouped="group" in spec)


def compile_tests(
    spec: Any,
    on_doc: Any,
    tested: TestedRule | list[str | None],
    sink: Problems,
    path: Path = ("tests",),
) -> tuple[RuleTest, ...]:
    """RuleTests from `tests:` (None when absent); reports every mistake.  ``tested`` is
    what the tests may refer to (a list: the action names of a rule without group/resolve)."""
    if spec is None:
        return ()
    if not isinstance(spec, list):
        sink.at(path, f"must be a list of tests (got {shown(spec)})")
        return ()
    defaults = _defaults(on_doc)
    rule = tested if isinstance(tested, TestedRule) else TestedRule(tested)
    tests = []
    for i, item in enumerate(spec):
        test = _compile_test(item, defaults, rule, sink, (*path, i))
        if test is not None:
            tests.append(test)
    return tuple(tests)


def _defaults(on_doc: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if isinstance(on_doc, Mapping):
        for key in ("chain_id", "registry", "event_type"):
            value = on_doc.get(key)
            if isinstance(value, list):
                value = value[0] if value else None
            if value is not None:
                defaults[key] = value
    return defaults


def _compile_test(
    item: Any,
    defaults: dict[str, Any],
    rule: TestedRule,
    sink: Problems,
    path: Path,
) -> RuleTest | None:
    item = mapping_at(item, sink, path, "a mapping with name, events, fires")
    if item is None:
        return None
    before = sink.count
    check_keys(
        item,
        ("name", "events", "fires", "renders", "resolves", "digests"),
        sink,
        path,
        required=("name", "events", "fires"),
    )
    name = item.get("name")
    if "name" in item and not isinstance(name, str):
        sink.at((*path, "name"), f"must be a string (got {shown(name)})")
    events = _events(item.get("events"), defaults, sink, (*path, "events"))
    fires = item.get("fires")
    if "fires" in item and (
        not isinstance(fires, list) or not all(type(f) is int and f >= 0 for f in fires)
    ):
        sink.at((*path, "fires"), f"must be a list of 0-based event indexes (got {shown(fires)})")
    elif isinstance(fires, list) and events is not None:
        for f in fires:
            if f >= len(events):
                sink.at((*path, "fires"), f"index {f} is past the last event ({len(events) - 1})")
    resolves = _resolves(item, events, rule, sink, path)
    digests = _digests(item, rule, sink, path)
    renders = _renders(item.get("renders"), rule, sink, (*path, "renders"))
    if sink.count != before or events is None or renders is None:
        return None
    line = sink.lines.line_of((*sink.base, *path)) or 0
    fired = tuple(sorted(set(fires or [])))
    return RuleTest(str(name), tuple(events), fired, renders, line, resolves, digests)


def _resolves(
    item: Mapping[str, Any],
    events: list[dict[str, Any] | Advance] | None,
    rule: TestedRule,
    sink: Problems,
    path: Path,
) -> tuple[int, ...] | None:
    """`resolves:` the steps at which resolved notices are sent (None: not asserted)."""
    if "resolves" not in item:
        return None
    spec, where = item["resolves"], (*path, "resolves")
    if rule.resolve_action_names is None:
        sink.at(where, "needs the rule to have `resolve:` (there is nothing to resolve)")
        return None
    if not isinstance(spec, list) or not all(type(r) is int and r >= 0 for r in spec):
        sink.at(where, f"must be a list of 0-based step indexes (got {shown(spec)})")
        return None
    if events is not None:
        for r in spec:
            if r >= len(events):
                sink.at(where, f"index {r} is past the last step ({len(events) - 1})")
    return tuple(sorted(set(spec)))


def _digests(item: Mapping[str, Any], rule: TestedRule, sink: Problems, path: Path) -> int | None:
    """`digests:` how many digests the test sends in all (None: not asserted)."""
    if "digests" not in item:
        return None
    count, where = item["digests"], (*path, "digests")
    if not rule.grouped:
        sink.at(where, "needs the rule to have `group:` (its firings are not digested)")
        return None
    if type(count) is not int or count < 0:
        sink.at(where, f"must be the number of digests the test sends (got {shown(count)})")
        return None
    return count


def _events(
    spec: Any, defaults: dict[str, Any], sink: Problems, path: Path
) -> list[dict[str, Any] | Advance] | None:
    if not isinstance(spec, list):
        sink.at(path, f"must be a list of event rows (got {shown(spec)})")
        return None
    if len(spec) > MAX_TEST_EVENTS:
        sink.at(path, f"has more than {MAX_TEST_EVENTS} events")
        return None
    events: list[dict[str, Any] | Advance] = []
    clock = TEST_START_S - 1
    for i, row in enumerate(spec):
        row = mapping_at(row, sink, (*path, i), "a mapping of event fields or {advance: 2h}")
        if row is None:
            continue
        if "advance" in row:
            if not events:
                clock = TEST_START_S
            step = _advance(row, clock, sink, (*path, i))
            if step is not None:
                clock = step.now
                events.append(step)
            continue
        for key in row:
            if key not in EVENT_FIELDS:
                sink.at((*path, i, key), f"is not an event field{suggest(key, EVENT_FIELDS)}")
        clock = _stamp(row.get("timestamp"), clock, sink, (*path, i, "timestamp"))
        event = {"id": f"test-{i}", "block_number": i + 1, "log_index": 0, **defaults, **row}
        event["timestamp"] = clock
        events.append(event)
    return events


def _stamp(stamp: Any, clock: int, sink: Problems, path: Path) -> int:
    """An event's timestamp: given, relative to the previous step's, or one second later."""
    relative = _RELATIVE.match(stamp) if isinstance(stamp, str) else None
    if stamp is None:
        return clock + 1
    if relative is not None:
        return clock + int(relative.group(1))
    if type(stamp) is int:
        return stamp
    sink.at(
        path,
        f"must be unix seconds or '+N' seconds after the previous event (got {shown(stamp)})",
    )
    return clock


def _advance(row: Mapping[str, Any], clock: int, sink: Problems, path: Path) -> Advance | None:
    if len(row) != 1:
        others = ", ".join(str(k) for k in row if k != "advance")
        sink.at(
            path, f"an advance step has no event fields (got {others}); put them in the next item"
        )
        return None
    try:
        seconds = parse_duration(row["advance"])
    except DurationError as exc:
        sink.at((*path, "advance"), str(exc))
        return None
    return Advance(seconds, clock + seconds)


def _renders(
    spec: Any, rule: TestedRule, sink: Problems, path: Path
) -> tuple[RenderExpectation, ...] | None:
    if spec is None:
        return ()
    if not isinstance(spec, list):
        sink.at(path, f"must be a list of {{firing, action, contains}} (got {shown(spec)})")
        return None
    out = []
    for i, item in enumerate(spec):
        where = (*path, i)
        item = mapping_at(item, sink, where, "a mapping with firing, action, contains")
        if item is None or not check_keys(
            item, ("firing", "resolve", "action", "contains"), sink, where, required=("contains",)
        ):
            continue
        target = _render_target(item, rule, sink, where)
        if target is None:
            continue
        (kind, firing), action, contains = target, item.get("action", 0), item["contains"]
        action_names = rule.action_names if kind == "firing" else rule.resolve_action_names or []
        if isinstance(action, str) and action in action_names:
            action = action_names.index(action)
        if type(action) is not int or not 0 <= action < len(action_names):
            sink.at(
                (*where, "action"),
                f"must be {'a resolve' if kind == 'resolve' else 'an'} action index "
                f"(0..{len(action_names) - 1}) or name (got {shown(action)})",
            )
            continue
        texts = [contains] if isinstance(contains, str) else contains
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            sink.at((*where, "contains"), "must be a string or a list of strings")
            continue
        out.append(RenderExpectation(firing, action, tuple(texts), resolve=kind == "resolve"))
    return tuple(out)


def _render_target(
    item: Mapping[str, Any], rule: TestedRule, sink: Problems, where: Path
) -> tuple[str, int] | None:
    """What a `renders` item renders: ("firing", n) or ("resolve", n)."""
    if "firing" in item and "resolve" in item:
        sink.at(where, "renders either a firing or a resolved notice: give firing or resolve")
        return None
    kind = "resolve" if "resolve" in item else "firing"
    n = item.get(kind, 0)
    if kind == "resolve" and rule.resolve_action_names is None:
        sink.at((*where, kind), "needs the rule to have `resolve:` (there is nothing to resolve)")
        return None
    if type(n) is not int or n < 0:
        what = "firing" if kind == "firing" else "resolved notice"
        sink.at((*where, kind), f"must be a 0-based {what} index (got {shown(n)})")
        return None
    return kind, n
