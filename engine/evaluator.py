"""The evaluator: one batch of events, matched and stepped, committed in ONE transaction.

The transaction holds the cursor advance (engine.cursor), the changed rule states
(engine.state_store), the queued action rows (engine.action_rows) and the per-rule
counters, so a batch is recorded whole or not at all: with the cursor's optimistic
advance, that is guarantee 2 (no event evaluated twice).  This module never talks to
Redis: the dispatcher enqueues after the commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from engine.absence import note_seen
from engine.action_rows import (
    QUOTA_EXCEEDED,
    WRITE_CHUNK_ROWS,
    ActionRowWriter,
    EventWrittenTwice,
    PendingActionRows,
)
from engine.chains_config import ChainsSettings
from engine.config import EngineTunables
from engine.confirmations import Confirmations
from engine.cursor import Cursor, CursorMovedError, CursorPosition
from engine.digests import DigestBatch
from engine.event_rows import events_from_rows
from engine.firing_quota import FiringQuota
from engine.json_text import to_json
from engine.noise_controls import SILENCED, NoiseControls
from engine.reorgs import drop_rewritten, process_removals
from engine.resolves import AlertBatch
from engine.state_store import StateKey, States, load_states, save_states
from engine.tenant_rules import TenantRules
from engine.unusual_rows import unusual_rows
from rules import Rule, RuleIndex, Step, build_context, event_time
from sql import query

log = logging.getLogger(__name__)


#: Failures of a batch that come from its rows, not from the database being away: the
#: same batch would fail the same way on every retry.
POISON_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    UnicodeError,
    ValueError,
)
#: While a chunk of action rows is in flight the evaluation yields to it every this many
#: matches: each of its round trips needs the event loop.
YIELD_EVERY = 16

#: (event, rule, group key) of each rule matching an event, in event order.
Match = tuple[dict[str, Any], Rule, str]


@dataclass
class BatchResult:
    events: int = 0
    fired: int = 0
    suppressed: int = 0
    errors: int = 0
    unusual: int = 0  # rows that looked malformed (logged once each, still evaluated)
    future_events: int = 0  # stamped past the trust ceiling (logged once each, evaluated)
    quota_exceeded: int = 0  # firings held back by their organization's quota
    silenced: int = 0  # firings held back by a silence (engine.noise_controls)
    restarts: int = 0  # times the batch started over (evaluated again with the INSERT)
    rewrites: int = 0  # ids written again after their evaluation: not evaluated (reorgs)
    retractions: int = 0  # evaluated events removed by the indexer (on_retract queued)
    action_ids: list[int] = field(default_factory=list)  # the rows to enqueue
    # id -> organization, for the rows of action_ids that are an organization's
    action_orgs: dict[int, int] = field(default_factory=dict)
    last_event_timestamp: int | None = None
    read: int = 0  # rows the cursor read (held ones included)
    held: int = 0  # rows held for confirmations (engine.confirmations)
    released: int = 0  # rows evaluated through chain cursors (engine.confirmations)

    def caught_up(self, batch_size: int) -> bool:
        """Whether the batch found less to do than it could: no need for another now."""
        return self.read < batch_size and self.released < batch_size


class Evaluator:
    """Evaluates batches of events against the current rule index."""

    def __init__(
        self,
        cursor_name: str,
        batch_size: int,
        *,
        write_chunk_rows: int = WRITE_CHUNK_ROWS,
        max_event_future_skew_s: int = EngineTunables.max_event_future_skew_s,
        chains: ChainsSettings | None = None,
    ) -> None:
        self.cursor = Cursor(cursor_name)
        self.confirmations = Confirmations(chains or ChainsSettings(), cursor_name)
        self.batch_size = batch_size
        self.write_chunk_rows = write_chunk_rows
        self.max_event_future_skew_s = max_event_future_skew_s
        self.quota = FiringQuota()
        self.noise = NoiseControls()  # silences and runtime disables
        self._logged: set[tuple[str, str | None, str]] = set()

    @property
    def position(self) -> CursorPosition | None:
        """The cursor's committed position; set None to have it read again."""
        return self.cursor.position

    @position.setter
    def position(self, value: CursorPosition | None) -> None:
        self.cursor.position = value

    async def skip_next(self, conn: asyncpg.Connection) -> str | None:
        """Move the cursor past the next row without evaluating it (Cursor.skip_next)."""
        return await self.cursor.skip_next(conn)

    async def run_batch(
        self,
        conn: asyncpg.Connection,
        index: RuleIndex,
        *,
        limit: int | None = None,
        tenants: TenantRules | None = None,
        isolating: bool = False,
    ) -> BatchResult:
        """Evaluate one batch (``limit`` rows at most) and commit it; returns what happened.
        ``isolating``: the daemon looks for a row that cannot be recorded among the main
        cursor's rows, one at a time; chain cursors release nothing meanwhile.

        Action rows are written by COPY, which cannot skip a row already there (an event id
        the indexer wrote twice, see the insert_actions query).  Such a batch rolls back
        whole and is evaluated again with the INSERT, which skips it.

        With ``tenants``, ``index`` is kept up to date with the organizations' rules in the
        batch's transaction (engine.tenant_rules has the reasoning): the compiled changes
        are applied before the events are read, and only the events they cover are read.
        """
        if self.cursor.position is None:  # outside the batch: a rollback must not undo it
            await self.cursor.load(conn)
            self.confirmations.forget()
        await self.noise.refresh_if_due(conn)
        limit = limit or self.batch_size
        copy, restarts = True, 0
        while True:
            try:
                result = await self._run_batch(
                    conn, index, limit, copy=copy, tenants=tenants, isolating=isolating
                )
            except EventWrittenTwice:
                copy = False
                restarts += 1
                continue
            result.restarts = restarts
            return result

    async def _run_batch(
        self,
        conn: asyncpg.Connection,
        index: RuleIndex,
        limit: int,
        *,
        copy: bool,
        tenants: TenantRules | None,
        isolating: bool,
    ) -> BatchResult:
        result = BatchResult()
        async with conn.transaction():
            horizon = await tenants.apply(conn, index) if tenants is not None else None
            columns = self.confirmations.columns(index.event_fields)
            start = self.cursor.position
            assert start is not None
            removals = await process_removals(conn, index, start, self.cursor.name)
            rows, end = await self.cursor.read_and_advance(conn, limit, columns, horizon=horizon)
            result.read = len(rows)
            try:
                done = await self.confirmations.sort(
                    conn,
                    rows,
                    columns,
                    start,
                    end or start,
                    limit,
                    removals.chains,
                    release=not isolating,
                )
            except CursorMovedError:
                self.cursor.position = None
                raise
            result.held, result.released = done.held, done.released
            if done.rows:
                await self._evaluate(conn, done.rows, index, result, copy=copy, passed=done.passed)
            result.rewrites += removals.rewrites
            result.retractions = removals.retractions
            result.action_ids += removals.action_ids
            result.action_orgs.update(removals.action_orgs)
        if tenants is not None:
            tenants.committed()
        self.confirmations.committed()
        if end is not None:
            self.cursor.position = end
        return result

    async def _evaluate(
        self,
        conn: asyncpg.Connection,
        rows: list[asyncpg.Record],
        index: RuleIndex,
        result: BatchResult,
        *,
        copy: bool,
        passed: list[CursorPosition],
    ) -> None:
        events = events_from_rows(rows)
        self.noise.silenced.clear()  # a batch evaluated again starts afresh
        result.events = len(events)
        rows, events, result.rewrites = await drop_rewritten(conn, rows, events, passed)
        if not events:
            return
        for position, problems in unusual_rows(rows, events):
            result.unusual += 1
            self._log_once(events[position], None, "unusual event row", "; ".join(problems))
        last_ts = events[-1].get("timestamp")
        result.last_event_timestamp = last_ts if isinstance(last_ts, int) else None
        # One clock reading per batch: every event of it is judged against the same one.
        now = time.time()
        trusted_until = int(now) + self.max_event_future_skew_s
        self._note_future_events(events, trusted_until, result)
        matches = self._match(events, index, result)
        states = await load_states(
            conn, {(rule.id, key) for _, rule, key in matches if rule.stateful}
        )
        stats: dict[str, Counter[str]] = {}
        most = sum(len(rule.actions) for _, rule, _ in matches)
        writer = ActionRowWriter(conn, copy=copy, most=most)
        digests = DigestBatch()
        alerts = await AlertBatch.load(
            conn, {(rule.id, key) for _, rule, key in matches if rule.resolve is not None}
        )
        try:
            changed, pending = await self._step_all(
                matches, states, stats, writer, result, now, trusted_until, (digests, alerts)
            )
            written = await writer.finish(pending)
            await self.noise.record(conn)
        finally:
            await writer.settle()
        await digests.save(conn)
        await alerts.save(conn)
        held = set(writer.held)
        result.action_ids = [i for i in written if i not in held] if held else written
        result.action_orgs = writer.orgs
        org_ids = {rule.id: rule.org_id for _, rule, _ in matches}
        await save_states(conn, states, changed, org_ids)
        if index.absence_rules:  # their groups are seen in this transaction (engine.absence)
            await note_seen(conn, matches, now)
        await self._add_rule_stats(conn, stats, org_ids)

    async def _step_all(
        self,
        matches: list[Match],
        states: States,
        stats: dict[str, Counter[str]],
        writer: ActionRowWriter,
        result: BatchResult,
        now: float,
        trusted_until: int,
        noise: tuple[DigestBatch, AlertBatch],
    ) -> tuple[set[StateKey], PendingActionRows]:
        """Step every match; firings become action rows, handed to ``writer`` a chunk at
        a time as they fill.  Returns the state groups changed and the rows not handed."""
        changed: set[StateKey] = set()
        pending = PendingActionRows()
        fired_at = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
        silences = self.noise if self.noise.silences else None  # mostly none: no cost
        for n, (event, rule, key) in enumerate(matches):
            if n % YIELD_EVERY == 0 and writer.busy:
                await asyncio.sleep(0)
            counter = stats.setdefault(rule.id, Counter())
            counter["matched"] += 1
            try:
                state = states.get((rule.id, key)) if rule.stateful else None
                step = rule.step(event, state, trusted_until=trusted_until)
            except Exception as exc:  # a rule bug must not stop the engine
                counter["errors"] += 1
                result.errors += 1
                self._log_failure(event, rule.id, exc)
                continue
            if rule.stateful and step.state is not None:
                states[(rule.id, key)] = step.state
                changed.add((rule.id, key))
            if step.suppressed:
                counter["suppressed"] += 1
                result.suppressed += 1
            noise[1].note(rule, key, event, step, now, pending)  # `resolve`: may queue rows
            if not step.fired:
                continue
            counter["fired"] += 1
            result.fired += 1
            if silences is not None and silences.silence_of(rule, event, now) is not None:
                status = SILENCED  # recorded and never sent (nor digested); no quota
                result.silenced += 1
            elif rule.grouping is not None:  # kept for its group's digest (engine.digests)
                noise[0].add(rule, event, step, fired_at, now)
                continue
            else:
                status = self._quota_status(rule, event, now, result)
            try:
                context_json = self._context_json(rule, event, step, fired_at)
            except Exception as exc:
                counter["errors"] += 1
                result.errors += 1
                self._log_failure(event, rule.id, exc)
                continue
            for action in rule.actions:
                pending.add(rule, action, event.get("id"), context_json, status)
            if len(pending) >= self.write_chunk_rows:
                await writer.start(pending)
                pending = PendingActionRows(pending.shared)
        return changed, pending

    def _quota_status(
        self, rule: Rule, event: Mapping[str, Any], now: float, result: BatchResult
    ) -> str:
        """A firing's status: queued, or held back by its organization's quota."""
        if rule.org_id is None or self.quota.allow(rule.org_id, now):
            return "queued"
        result.quota_exceeded += 1
        self._log_quota(rule.org_id, event)
        return QUOTA_EXCEEDED

    def _note_future_events(
        self, events: list[dict[str, Any]], trusted_until: int, result: BatchResult
    ) -> None:
        """Count and log (once each) the events stamped past ``trusted_until``: they are
        evaluated, but Rule.step advances no time-based state for them."""
        for event in events:
            stamp = event.get("timestamp")
            if type(stamp) is not int:  # the column is BIGINT: only a NULL gets here
                stamp = event_time(event)
            if stamp is None or stamp <= trusted_until:
                continue
            result.future_events += 1
            ahead_s = stamp - trusted_until + self.max_event_future_skew_s
            self._log_once(
                event,
                None,
                "event timestamp ahead of the clock",
                f"timestamp {stamp} is {ahead_s}s ahead of this engine's clock (more than"
                f" engine.max_event_future_skew_s = {self.max_event_future_skew_s}); evaluated,"
                " but no throttle, window or other time-based state was advanced",
            )

    def _match(
        self, events: list[dict[str, Any]], index: RuleIndex, result: BatchResult
    ) -> list[Match]:
        matches: list[Match] = []
        disabled = self.noise.disabled  # not evaluated at all: no state, no firing
        for event in events:
            try:
                for rule in index.matching(event):
                    if disabled and rule.id in disabled:
                        continue
                    key = rule.group_key(event) if rule.stateful else ""
                    matches.append((event, rule, key))
            except Exception as exc:
                result.errors += 1
                self._log_failure(event, None, exc)
        return matches

    @staticmethod
    def _context_json(rule: Rule, event: Mapping[str, Any], step: Step, at: str) -> str:
        group = rule.group_values(event) if rule.per else {}
        return to_json(build_context(rule, event, group, step.template_state, at))

    def _log_quota(self, org_id: int, event: Mapping[str, Any]) -> None:
        """Once per organization and minute: its firings are being held back."""
        self._log_once(
            {"id": f"quota-{org_id}-{int(time.time() // 60)}"},
            None,
            "organization over its firing quota",
            f"organization {org_id} fired more than max_firings_per_minute ="
            f" {self.quota.limit_of(org_id)}; further firings are written with status"
            f" quota_exceeded and not delivered (first held: event {event.get('id')})",
        )

    @staticmethod
    async def _add_rule_stats(
        conn: asyncpg.Connection, stats: dict[str, Counter[str]], org_ids: Mapping[str, Any]
    ) -> None:
        """Add the batch's counts to each rule's hourly counters (rule_stats)."""
        if not stats:
            return
        ids = list(stats)
        await conn.execute(
            query("add_rule_stats"),
            ids,
            [org_ids.get(i) for i in ids],
            [stats[i]["matched"] for i in ids],
            [stats[i]["fired"] for i in ids],
            [stats[i]["suppressed"] for i in ids],
            [stats[i]["errors"] for i in ids],
        )

    def _log_failure(
        self, event: Mapping[str, Any], trigger_id: str | None, exc: Exception
    ) -> None:
        self._log_once(event, trigger_id, "event could not be evaluated", repr(exc)[:500])

    def _log_once(
        self, event: Mapping[str, Any], trigger_id: str | None, message: str, detail: str
    ) -> None:
        """One line per event and rule, even when a rolled-back batch is read again."""
        key = (str(event.get("id")), trigger_id, message)
        if key in self._logged:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged.add(key)
        log.warning(message, extra={"event_id": key[0], "trigger_id": trigger_id, "error": detail})
