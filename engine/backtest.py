"""``engine rules backtest``: the rules of one file over stored events, with fresh state.

``Backtest`` is the reusable part (the API's backtest of a stored rule uses it too): rules
fed stored events in order, chunk by chunk, from fresh state held in memory.

Reads events in the live cursor's order and evaluates them with the same pure code as
``engine run``, so the firings it prints are the ones the live engine would have
produced.  It sends nothing and writes nothing.

Its clock is each event's ``created_at``: when the row was stored is when the live engine
could first evaluate it, so an event's time is trusted (Rule.step) exactly as far as it
was live: up to engine.max_event_future_skew_s past that moment.  Rules driven by time
(absence) are driven on the same clock (rules.time_driven): they load at ``since``, time
moves to each event's ``created_at`` before it is evaluated, and to ``until`` at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import psycopg
from psycopg.rows import dict_row

import sql
from engine.config import Settings
from engine.event_rows import events_from_rows
from rules import (
    Firing,
    Rule,
    RuleIndex,
    evaluate_stream,
    event_time,
    load_rules,
    render_action,
)
from rules.durations import DurationError, parse_duration
from rules.envsubst import UnsetVariableError, expand_env
from rules.errors import EngineError, TemplateRenderError
from rules.notice_replay import NoticeReplay
from rules.testing import timed_firing
from rules.time_driven import TimeSteps

FETCH_ROWS = 5000
PROGRESS_MIN_EVENTS = 20_000


def parse_time(value: str, *, now: float) -> int:
    """``7d`` (ago), an ISO date/time, or unix seconds."""
    text = value.strip()
    if text.isdigit() and len(text) >= 9:
        return int(text)
    try:
        return int(now) - parse_duration(text)
    except DurationError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise EngineError(
            f"expected a duration (7d), an ISO date (2026-11-01) or unix seconds, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


def summarise_action(
    kind: str,
    raw: Mapping[str, Any],
    context: Mapping[str, Any],
    environ: Mapping[str, str],
) -> str:
    """What the action would have done, in one line (``environ``: what rules may read)."""
    try:
        spec = render_action(kind, expand_env(raw, environ), context)
    except (TemplateRenderError, UnsetVariableError) as exc:
        return f"{kind}: cannot render: {exc}"
    if kind == "rest":
        body = json.dumps(spec.get("body"), default=str)
        return f"rest {spec.get('method', 'POST')} {spec.get('url')} {body[:160]}"
    if kind == "telegram":
        text = str(spec.get("text", "")).replace("\n", " ")
        return f"telegram chat {spec.get('chat_id')}: {text[:160]}"
    target = spec.get("url") or f"agent {spec.get('agent')}"
    return f"mcp {spec.get('tool')} at {target}"


class StoredClock:
    """The backtest's clock: the latest event time to trust for each event (see above)."""

    def __init__(self, skew_s: int, fallback_s: float) -> None:
        self.skew_s = skew_s
        self.fallback_s = int(fallback_s)  # a created_at that does not parse: the run's time
        self.ahead = 0  # events stamped past their ceiling

    def stored_s(self, event: Mapping[str, Any]) -> int:
        """When the event was stored: the moment the live engine could evaluate it."""
        try:
            return int(dt.datetime.fromisoformat(str(event.get("created_at"))).timestamp())
        except (TypeError, ValueError, OverflowError, OSError):
            return self.fallback_s

    def trusted_until(self, event: Mapping[str, Any]) -> int:
        ceiling = self.stored_s(event) + self.skew_s
        stamp = event_time(event)
        if stamp is not None and stamp > ceiling:
            self.ahead += 1
        return ceiling


@dataclass
class Backtest:
    """``rules`` over stored events fed in the live cursor's order, from fresh state.

    Events may come in several chunks (``feed`` once per chunk): state, counts and event
    indexes carry on from one chunk to the next, so the result is that of one stream.
    """

    rules: Sequence[Rule]
    clock: StoredClock
    states: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: int = 0
    fired: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)

    since: float | None = None  # when the rules load: time-driven rules start watching

    def __post_init__(self) -> None:
        self._index = RuleIndex(list(self.rules))
        self._timed = TimeSteps(self.rules, self.states)
        if self._timed and self.since is not None:
            self._timed.start(self.since)
        # Digests and resolved notices, as `engine run` would send them over the stream
        # (rules.notice_replay); each numbers the rule's firings that were not throttled.
        self.notices = {
            r.id: NoticeReplay(r) for r in self.rules if r.grouping is not None or r.resolve
        }
        self._numbered: Counter[str] = Counter()

    def feed(self, events: Iterable[Mapping[str, Any]]) -> Iterator[Firing]:
        """The firings (and throttled firings) of the next events, counted as they go."""
        if self._timed or self.notices:
            yield from self._feed_timed(events)
            return
        offset = self.events
        for firing in evaluate_stream(
            self._index, self._counted(events), self.states, trusted_until=self.clock.trusted_until
        ):
            yield self._counted_firing(
                replace(firing, event_index=offset + firing.event_index) if offset else firing
            )

    def finish(self, until: float) -> Iterator[Firing]:
        """The firings of time passing from the last event to ``until``; the digests
        still pending are sent."""
        yield from self._advance(until)
        for replay in self.notices.values():
            replay.advance(until, self.events)
            replay.finish()

    def _feed_timed(self, events: Iterable[Mapping[str, Any]]) -> Iterator[Firing]:
        """One event at a time: time moves to each event's stored time before it."""
        for event in events:
            now = self.clock.stored_s(event)
            yield from self._advance(now)
            position = self.events
            self.events += 1
            for replay in self.notices.values():
                replay.advance(now, position)
            stream = evaluate_stream(
                self._index, (event,), self.states, trusted_until=self.clock.trusted_until
            )
            stepped = [self._counted_firing(replace(f, event_index=position)) for f in stream]
            yield from stepped
            self._note(event, stepped, now, position)
            if self._timed:
                self._timed.event(event, now)

    def _note(
        self, event: Mapping[str, Any], stepped: list[Firing], now: float, position: int
    ) -> None:
        """Tell each rule's notice replay what the event did (rules.notice_replay)."""
        for rule_id, replay in self.notices.items():
            if not replay.rule.matches(event):
                continue
            numbered = []
            for firing in (f for f in stepped if f.rule.id == rule_id):
                numbered.append((self._numbered[rule_id], firing))
                self._numbered[rule_id] += firing.step.fired
            replay.event(event, numbered, now, position)

    def _advance(self, now: float) -> Iterator[Firing]:
        """Time-driven firings at ``now``, each at the index of the next event."""
        for timed in self._timed.advance(now) if self._timed else ():
            yield self._counted_firing(timed_firing(timed, self.events))

    def _counted_firing(self, firing: Firing) -> Firing:
        counter = self.suppressed if firing.step.suppressed else self.fired
        counter[firing.rule.id] += 1
        return firing

    def _counted(self, events: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for event in events:
            self.events += 1
            yield event


def _events(conn: sql.Connection, since: int, until: int) -> Iterator[dict[str, Any]]:
    with (
        conn.transaction(),
        psycopg.RawServerCursor(conn, "backtest", row_factory=dict_row) as cur,
    ):
        cur.execute(sql.query("backtest_events").encode(), (since, until, None))
        while rows := cur.fetchmany(FETCH_ROWS):
            yield from events_from_rows(rows)


class Progress:
    """A progress line on stderr for long ranges (only on a terminal)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream, self.done = total, stream, 0
        self.enabled = total >= PROGRESS_MIN_EVENTS and stream.isatty()
        self._last = 0.0

    def tick(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        self.done += 1
        if self.enabled and time.monotonic() - self._last > 0.2:
            self._last = time.monotonic()
            pct = 100 * self.done / max(self.total, 1)
            bar = "#" * int(pct / 4)
            self.stream.write(f"\r[{bar:<25}] {pct:5.1f}% {self.done}/{self.total} events")
            self.stream.flush()
        return event

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")


def run_backtest(settings: Settings, args: argparse.Namespace) -> int:
    loading = settings.rule_loading()
    environ = loading["environ"]
    loaded = load_rules([args.file], **loading)
    for error in loaded.errors:
        print(error, file=sys.stderr)
    if loaded.errors:
        return 1
    rules = [r for r in loaded.rules if args.rule is None or r.id == args.rule]
    if not rules:
        raise EngineError(f"no rule {args.rule!r} in {args.file}")
    now = time.time()
    since = parse_time(args.since, now=now)
    until = parse_time(args.until, now=now) if args.until else int(now) + 1
    with sql.connect(settings.database_url, autocommit=False) as conn:
        row = sql.fetch_one(conn, "backtest_count", since, until)
        total = int(row[0]) if row else 0
        progress = Progress(total, sys.stderr)
        events = (progress.tick(e) for e in _events(conn, since, until))
        clock = StoredClock(settings.engine.max_event_future_skew_s, now)
        backtest = Backtest(rules, clock, since=since)
        if args.explain:
            from engine.backtest_explain import explain_backtest

            explain_backtest(backtest, events, environ)
        else:
            for firing in itertools.chain(backtest.feed(events), backtest.finish(until)):
                if not firing.step.suppressed:
                    print_firing(firing, environ)
        progress.close()
    print(f"\n{total} event(s) from {_when(since)} to {_when(until)}")
    if clock.ahead:
        print(
            f"  {clock.ahead} event(s) stamped more than engine.max_event_future_skew_s"
            f" ({clock.skew_s}s) after they were stored: evaluated, no time-based state advanced"
        )
    for rule in rules:
        fired, suppressed = backtest.fired[rule.id], backtest.suppressed[rule.id]
        print(f"  {rule.id}: {fired} firing(s), {suppressed} suppressed")
        replay = backtest.notices.get(rule.id)
        if replay is not None and not args.explain:  # --explain steps rules one by one
            print_notices(replay)
    return 0


def print_notices(replay: NoticeReplay) -> None:
    """What `engine run` would have sent for a rule's `group` and `resolve`."""
    if replay.rule.grouping is not None:
        held = sum(len(d.firings) for d in replay.digests)
        print(f"    {len(replay.digests)} digest(s), holding {held} firing(s):")
        for digest in replay.digests:
            print(f"      {len(digest.firings)} firing(s), sent {_when(int(digest.sent_at))}")
    if replay.rule.resolve is not None:
        print(f"    {len(replay.resolves)} resolved notice(s)")


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def print_firing(firing: Firing, environ: Mapping[str, str], indent: str = "") -> None:
    """A firing's rule, event and what each of its actions would have done."""
    event = firing.event
    group = f" group {json.dumps(firing.group)}" if firing.group else ""
    if firing.rule.absence is not None:  # no event: the group went quiet
        absent = firing.context.get("absent") or {}
        print(
            f"{indent}{firing.rule.id}: quiet for {absent.get('for')} at"
            f" {firing.context.get('fired_at')} (last seen"
            f" {absent.get('last_seen_at') or 'never'}){group}"
        )
    else:
        print(
            f"{indent}{firing.rule.id}: event {event.get('id')} block"
            f" {event.get('block_number')} at {_when(int(event.get('timestamp') or 0))}{group}"
        )
    for action in firing.rule.actions:
        print(
            f"{indent}    -> {summarise_action(action.kind, action.raw, firing.context, environ)}"
        )
