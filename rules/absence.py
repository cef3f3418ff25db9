"""`when: {absent: {for: 1h, expect: [...]}}`: a group gone quiet, judged by time passing.

An absence rule never fires on an event: a matching event only marks its group seen.
It fires when time passes, so the same three steps drive it wherever it runs — the
engine (engine.absence, over the absence_groups table, with the wall clock) and the rule
tests (AbsenceSteps below, over a test's states dict, with the test's clock):

1. a matching event at ``now`` re-arms its group: quiet since ``now``, due at ``now + for``;
2. each `expect:` group is watched from the moment the rule loads, as if seen then
   (``last_seen_at`` stays null until an event really comes);
3. at a ``now`` at or past a group's due time it fires once and is disarmed; only an event
   arms it again, so it fires again only after being seen again and going quiet again.

This module reads no clock and does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from rules.reporting import Problems, shown
from rules.shapes import check_keys, duration
from rules.templates import build_context
from rules.yaml_source import Path

if TYPE_CHECKING:
    from rules.model import Rule
    from rules.time_driven import TimedFiring

#: The condition's name in `when:` and the template context's name for its values.
ABSENT: Final = "absent"
#: An absence rule may list at most this many `expect:` groups (each is a row to watch).
MAX_EXPECTED_GROUPS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Absence:
    """A compiled `absent` condition.

    ``expect`` holds the watched groups as (field, value) pairs in `per` order, so the
    engine and the tests make their group keys with Rule.group_key like an event's.
    """

    for_s: int
    for_text: str
    expect: tuple[tuple[tuple[str, Any], ...], ...] = ()

    def expected_groups(self) -> list[dict[str, Any]]:
        """The `expect:` groups as event-like mappings of their `per` values."""
        return [dict(pairs) for pairs in self.expect]


def is_absence_rule(spec: Mapping[str, Any]) -> bool:
    """Whether the rule mapping's `when` names `absent` (then compile_absence owns it)."""
    when = spec.get("when")
    if isinstance(when, Mapping):
        return ABSENT in when
    if isinstance(when, list):
        return any(isinstance(item, Mapping) and ABSENT in item for item in when)
    return False


def compile_absence(
    spec: Mapping[str, Any], per: Sequence[str] | None, sink: Problems
) -> Absence | None:
    """The rule's `when: {absent: …}`; reports every mistake.

    ``per`` is the compiled `per` (None when it had mistakes of its own: then the `expect`
    groups are not checked against it).
    """
    when = spec.get("when")
    path: Path = ("when",)
    if isinstance(when, list):
        if len(when) != 1:
            sink.at(path, "absent cannot be combined with other conditions; use it alone")
            return None
        when, path = when[0], ("when", 0)
    assert isinstance(when, Mapping)
    if len(when) != 1:
        others = ", ".join(str(k) for k in when if k != ABSENT)
        sink.at(
            path,
            f"absent cannot be combined with other conditions (got {others}): an absent "
            "group has no event to test them on; write a second rule for them",
        )
        return None
    if "throttle" in spec:
        sink.at(
            ("throttle",),
            "cannot be used with when.absent: an absent group fires once per quiet period",
        )
    path = (*path, ABSENT)
    body = when[ABSENT]
    if not isinstance(body, Mapping):
        sink.at(path, f"must be a mapping with for (and expect) (got {shown(body)})")
        return None
    before = sink.count
    check_keys(body, ("for", "expect"), sink, path, required=("for",))
    for_s = duration(body, "for", sink, path) if "for" in body else None
    expect = _compile_expect(body.get("expect"), per, sink, (*path, "expect"))
    if sink.count != before or for_s is None or expect is None:
        return None
    return Absence(for_s, str(body["for"]).strip(), expect)


def _compile_expect(
    spec: Any, per: Sequence[str] | None, sink: Problems, path: Path
) -> tuple[tuple[tuple[str, Any], ...], ...] | None:
    if spec is None:
        return ()
    if not isinstance(spec, list) or not spec:
        sink.at(
            path, f"must be a non-empty list of groups like {{agent_id: 42}} (got {shown(spec)})"
        )
        return None
    if len(spec) > MAX_EXPECTED_GROUPS:
        sink.at(path, f"lists more than {MAX_EXPECTED_GROUPS} groups")
        return None
    if per is not None and not per:
        sink.at(path, "needs per: the expected groups are values of the per fields")
        return None
    groups: list[tuple[tuple[str, Any], ...]] = []
    seen: set[tuple[tuple[str, Any], ...]] = set()
    for i, item in enumerate(spec):
        where = (*path, i)
        if not isinstance(item, Mapping):
            sink.at(where, f"must be a mapping of the per fields (got {shown(item)})")
            continue
        if per is None:
            continue
        if set(item) != set(per):
            sink.at(
                where,
                f"must give exactly the per fields ({', '.join(per)}); got "
                f"{', '.join(map(str, item)) or 'none'}",
            )
            continue
        bad = [k for k in per if type(item[k]) not in (int, str)]
        if bad:
            sink.at((*where, bad[0]), f"must be a number or a string (got {shown(item[bad[0]])})")
            continue
        pairs = tuple((name, item[name]) for name in per)
        if pairs in seen:
            sink.at(where, "lists this group twice")
            continue
        seen.add(pairs)
        groups.append(pairs)
    return tuple(groups)


def absence_event_id(group_key: str, quiet_since_s: float) -> str:
    """The action rows' event_id for one quiet period of one group.

    action_results is unique on (trigger_id, event_id, action_index): naming the quiet
    period by the moment it began makes a second firing of the same period impossible,
    while the next period (the group seen again) gets a new id.
    """
    return f"absent:{group_key}:{round(quiet_since_s * 1000)}"


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds, the engine's `fired_at` form."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def absence_context(
    rule: Rule,
    group: Mapping[str, Any],
    event_id: str,
    last_seen_at_s: float | None,
    fired_at_s: float,
) -> dict[str, Any]:
    """The template context of an absence firing.

    There is no event: `event` holds the group's values (and the synthetic id) so
    `event.agent_id` reads as in any rule; `absent` has `for` (as written) and
    `last_seen_at` (ISO time of the last matching event; null when an expected group
    was never seen).
    """
    context = build_context(rule, {**group, "id": event_id}, group, {}, iso_time(fired_at_s) or "")
    context[ABSENT] = {
        "for": rule.absence.for_text if rule.absence is not None else "",
        "last_seen_at": iso_time(last_seen_at_s),
    }
    return context


# The rule tests' bookkeeping: one entry per group in the test's states dict, under the
# rule's id and the group key, like a stateful rule's state.
_SINCE, _SEEN, _DUE = "quiet_since", "last_seen_at", "due_at"


class AbsenceSteps:
    """Absence rules in rule tests and backtests (rules.time_driven.TimeDriven)."""

    def drives(self, rule: Rule) -> bool:
        """Absence rules only."""
        return rule.absence is not None

    def on_start(
        self, rule: Rule, states: MutableMapping[tuple[str, str], dict[str, Any]], now: float
    ) -> None:
        """Watch the `expect:` groups from the test's start (the rule's load)."""
        if rule.absence is None:
            return
        for group in rule.absence.expected_groups():
            states.setdefault(
                (rule.id, rule.group_key(group)),
                {_SINCE: now, _SEEN: None, _DUE: now + rule.absence.for_s, "group": group},
            )

    def on_event(
        self,
        rule: Rule,
        event: Mapping[str, Any],
        states: MutableMapping[tuple[str, str], dict[str, Any]],
        now: float,
    ) -> None:
        """A matching event re-arms its group."""
        if rule.absence is None:
            return
        states[(rule.id, rule.group_key(event))] = {
            _SINCE: now,
            _SEEN: now,
            _DUE: now + rule.absence.for_s,
            "group": rule.group_values(event),
        }

    def on_advance(
        self, rule: Rule, states: MutableMapping[tuple[str, str], dict[str, Any]], now: float
    ) -> list[TimedFiring]:
        """Fire each armed group due at ``now``, in due order, and disarm it."""
        from rules.time_driven import TimedFiring

        if rule.absence is None:
            return []
        due = sorted(
            (entry[_DUE], key)
            for (rule_id, key), entry in states.items()
            if rule_id == rule.id and entry.get(_DUE) is not None and entry[_DUE] <= now
        )
        firings = []
        for _, key in due:
            entry = states[(rule.id, key)]
            event_id = absence_event_id(key, entry[_SINCE])
            # Fired when it fell due: between two steps of a stream, that is when the
            # live engine would have fired it.
            context = absence_context(rule, entry["group"], event_id, entry[_SEEN], entry[_DUE])
            states[(rule.id, key)] = {**entry, _DUE: None}
            firings.append(TimedFiring(rule, key, dict(entry["group"]), context))
        return firings
