"""Digests and resolved notices replayed on a stream's own clock (rule tests).

``engine run`` keeps digest groups and open alerts in PostgreSQL and sends them on the
wall clock (engine.digests, engine.resolves).  A rule test has no wall clock: its time is
its events' timestamps and its `{advance: …}` steps.  ``NoticeReplay`` applies the same
rules on that clock, for one rule, so what a test asserts is what the engine would send:

- a firing of a rule with `group` joins its group's pending firings; a group with nothing
  pending falls due `wait` after the firing, and never sooner than `interval` after the
  group's previous digest (GroupSpec.due_at); when time reaches that moment the digest is
  sent with everything pending, and a later firing goes into the next one; what is still
  pending when the stream ends is sent then (at its due time);
- a firing of a rule with `resolve` opens (or extends) its group's alert; the group's
  next event that neither fires nor is throttled resolves it, and so does time reaching
  `after` past its last firing.

Time moves before each step (``advance``), so a digest or an `after` due at or before an
event's timestamp is sent before that event is evaluated, as the engine's flush between
batches does.  Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rules.absence import iso_time
from rules.grouping import digest_context, resolve_context
from rules.templates import build_context

if TYPE_CHECKING:
    from rules.evaluate import Firing
    from rules.model import Rule


@dataclass(frozen=True)
class SentDigest:
    """One digest: the firings it holds (their numbers among the stream's firings)."""

    firings: tuple[int, ...]
    sent_at: float
    position: int | None  # the step it was sent at; None: at the end of the stream
    context: dict[str, Any]


@dataclass(frozen=True)
class ResolveNotice:
    """One resolved notice, sent at step ``position``."""

    position: int
    group_key: str
    context: dict[str, Any]


@dataclass
class _DigestGroup:
    pending: list[tuple[int, Firing]] = field(default_factory=list)
    due_at: float | None = None
    last_sent_at: float | None = None


@dataclass
class _OpenAlert:
    group: dict[str, Any]
    fired_at: float
    last_fired_at: float
    firings: int
    last_event: Mapping[str, Any]
    resolve_at: float | None


class NoticeReplay:
    """The digests and resolved notices of one rule over one stream of steps."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.digests: list[SentDigest] = []
        self.resolves: list[ResolveNotice] = []
        self._groups: dict[str, _DigestGroup] = {}
        self._alerts: dict[str, _OpenAlert] = {}

    def advance(self, now: float, position: int) -> None:
        """Time reaches ``now`` at step ``position``: send what falls due by then."""
        due = sorted((g.due_at, key) for key, g in self._groups.items() if g.due_at is not None)
        for due_at, key in due:
            if due_at <= now:
                self._send_digest(key, due_at, position)
        after = self.rule.resolve.after_s if self.rule.resolve is not None else None
        if after is None:
            return
        quiet = sorted(
            (a.resolve_at, key)
            for key, a in self._alerts.items()
            if a.resolve_at is not None and a.resolve_at <= now
        )
        for resolve_at, key in quiet:
            alert = self._alerts.pop(key)
            self._resolve(key, alert, alert.last_event, resolve_at, position)

    def event(
        self,
        event: Mapping[str, Any],
        firings: list[tuple[int, Firing]],
        now: float,
        position: int,
    ) -> None:
        """``event`` (which the rule matches) was stepped at ``now``: ``firings`` are its
        firing of the rule (numbered among the stream's), none when it did not meet `when`."""
        fired = [(n, f) for n, f in firings if f.step.fired]
        throttled = any(f.step.suppressed for _, f in firings)
        if self.rule.grouping is not None:
            for n, firing in fired:
                self._collect(n, firing, now)
        if self.rule.resolve is None:
            return
        key = self.rule.group_key(event)
        if fired:
            self._open(key, fired[-1][1], now)
        elif not throttled and key in self._alerts:
            row = build_context(self.rule, event, {}, {}, "")["event"]
            self._resolve(key, self._alerts.pop(key), row, now, position)

    def finish(self) -> None:
        """The stream ends: every group with pending firings sends them (at its due time)."""
        for due_at, key in sorted(
            (g.due_at, key) for key, g in self._groups.items() if g.due_at is not None
        ):
            self._send_digest(key, due_at, None)

    def digest_of(self, firing: int) -> SentDigest | None:
        """The digest holding the stream's ``firing``-th firing (None: in no digest)."""
        return next((d for d in self.digests if firing in d.firings), None)

    def _collect(self, n: int, firing: Firing, now: float) -> None:
        spec = self.rule.grouping
        assert spec is not None
        group = self._groups.setdefault(spec.key(firing.event), _DigestGroup())
        if group.due_at is None:
            group.due_at = spec.due_at(now, group.last_sent_at)
        group.pending.append((n, firing))

    def _send_digest(self, key: str, sent_at: float, position: int | None) -> None:
        spec = self.rule.grouping
        assert spec is not None
        group = self._groups[key]
        first = group.pending[0][1]
        listed = [
            {key: f.context[key] for key in ("event", "state", "fired_at")}
            for _, f in group.pending[: spec.max_firings]
        ]
        context = digest_context(
            first.context["rule"],
            spec.values(first.event),
            listed,
            len(group.pending),
            iso_time(sent_at) or "",
        )
        numbers = tuple(n for n, _ in group.pending)
        self.digests.append(SentDigest(numbers, sent_at, position, context))
        group.pending, group.due_at, group.last_sent_at = [], None, sent_at

    def _open(self, key: str, firing: Firing, now: float) -> None:
        resolve = self.rule.resolve
        assert resolve is not None
        alert = self._alerts.get(key)
        if alert is None:
            alert = _OpenAlert(dict(firing.group), now, now, 0, firing.context["event"], None)
            self._alerts[key] = alert
        alert.firings += 1
        alert.last_fired_at = now
        alert.last_event = firing.context["event"]
        alert.resolve_at = None if resolve.after_s is None else now + resolve.after_s

    def _resolve(
        self,
        key: str,
        alert: _OpenAlert,
        event: Mapping[str, Any],
        resolved_at: float,
        position: int,
    ) -> None:
        context = resolve_context(
            build_context(self.rule, {}, {}, {}, "")["rule"],
            alert.group,
            event,
            {
                "fired_at": iso_time(alert.fired_at),
                "last_fired_at": iso_time(alert.last_fired_at),
                "firings": alert.firings,
            },
            iso_time(resolved_at) or "",
        )
        self.resolves.append(ResolveNotice(position, key, context))
