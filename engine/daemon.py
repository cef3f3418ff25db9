"""``engine run``: leader election, listener, evaluator loop, rule reloads, dispatcher and sweep.

Only one ``engine run`` per cursor evaluates at a time (a session advisory lock held
on a dedicated connection); the others wait as standbys and take over within
``standby_retry_s`` of the leader's death, from the cursor.  Every failure of the
database or Redis is logged and retried with backoff: the daemon itself never exits
for an outage.

Rule files are compiled in a thread, never on the event loop: evaluation and /healthz
go on with the current rules meanwhile, and the changed rules are put into the index
between two batches, never in the middle of one.  The organizations' rule changes are
compiled by a background task (engine.tenant_rules) and applied by each batch, inside its
transaction, to exactly the events they cover: a change committed before an event is
applied before that event is evaluated, and no batch waits for a compile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
import redis

from engine.absence import AbsenceTicker
from engine.config import Settings
from engine.cursor import CursorAheadError, CursorMovedError
from engine.daemon_stats import DaemonStats
from engine.digests import flush_due_digests
from engine.dispatcher import Dispatcher, sweep_actions
from engine.evaluator import POISON_ERRORS, Evaluator
from engine.leader import CONNECTION_ERRORS, LeaderLock
from engine.listener import Listener
from engine.maintenance import Maintenance
from engine.resolves import resolve_quiet_alerts
from engine.rulebook import RuleBook, RuleSwap
from engine.tenant_rules import TenantRules
from rules.gc_pause import freeze_long_lived
from sql import query

log = logging.getLogger(__name__)

#: How often the organizations' quotas (organizations.max_firings_per_minute) are read.
QUOTA_REFRESH_S = 10.0
#: How often, at most, due digests and `resolve.after` are looked for between batches.
FLUSH_INTERVAL_S = 0.1


class Daemon:
    """Wires the parts of ``engine run`` together."""

    def __init__(self, settings: Settings, *, rulebook: RuleBook | None = None) -> None:
        self.settings = settings
        tun = settings.engine
        self.doorbell = asyncio.Event()
        self.listener = Listener(settings.database_url, self.doorbell, tun)
        self.evaluator = Evaluator(
            tun.cursor_name,
            tun.batch_size,
            max_event_future_skew_s=tun.max_event_future_skew_s,
            chains=settings.chains,
        )
        self.dispatcher = Dispatcher(settings.redis_url, settings.worker)
        self.rulebook = rulebook or RuleBook.for_settings(settings)
        self.tenants = TenantRules(settings.bot_names)
        self.evaluator.quota.default_per_minute = settings.tenants.max_firings_per_minute
        self.evaluator.noise.refresh_s = tun.silences_refresh_s
        self._next_quota_refresh = 0.0
        self.leader = LeaderLock(
            settings.database_url,
            tun.cursor_name,
            connect_timeout_s=tun.db_connect_timeout_s,
            check_timeout_s=tun.leader_check_timeout_s,
        )
        self.stats = DaemonStats()
        self.maintenance = Maintenance(settings.retention)  # retention and statistics
        self.absence = AbsenceTicker(
            tick_rows=tun.absence_tick_rows, tick_interval_s=tun.absence_tick_interval_s
        )
        self.stopping = asyncio.Event()
        self.rules_staged = asyncio.Event()  # a compiled reload waits for a batch boundary
        self._staged: RuleSwap | None = None
        self._compiling = asyncio.Lock()  # one compile at a time: the newest files win
        self._standby_announced = False
        self._redis_outage = False
        self._next_sweep = 0.0
        self._next_flush = 0.0  # monotonic: when due digests and resolves are looked for
        self.pool: asyncpg.Pool | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def run(self) -> None:
        """Until ``stopping`` is set."""
        from engine.http import HttpServer

        http = None
        if self.settings.http_listen:
            http = HttpServer(self, self.settings.http_listen)
            await http.start()  # before the pool: /healthz answers while the database is away
        try:
            self.pool = await self._create_pool()
            self._tasks = [
                asyncio.create_task(self.listener.run(), name="listener"),
                asyncio.create_task(self._watch_rules(), name="rule-watch"),
                asyncio.create_task(self._follow_tenant_rules(), name="tenant-rules"),
            ]
            await self._loop()
        except asyncio.CancelledError:
            pass  # stopped while waiting for the database
        finally:
            if http is not None:
                await http.close()
            await self.maintenance.close()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.leader.release()
            if self.pool is not None:
                await self.pool.close()
            self.dispatcher.close()

    async def _create_pool(self) -> asyncpg.Pool:
        tun = self.settings.engine
        delay = tun.reconnect_min_s
        while True:
            try:
                pool = await asyncpg.create_pool(
                    self.settings.database_url,
                    min_size=tun.db_pool_min_size,
                    max_size=tun.db_pool_max_size,
                    timeout=tun.db_connect_timeout_s,
                )
                assert pool is not None
                return pool
            except CONNECTION_ERRORS as exc:
                log.warning("database unavailable", extra={"error": str(exc), "retry_s": delay})
                await self._sleep(delay)
                delay = min(delay * 2, tun.reconnect_max_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        if self.stopping.is_set():
            raise asyncio.CancelledError

    async def _loop(self) -> None:
        tun = self.settings.engine
        delay = tun.reconnect_min_s
        while not self.stopping.is_set():
            try:
                if not await self._ensure_leader():
                    await self._sleep(tun.standby_retry_s)
                    continue
                self.doorbell.clear()
                self.rules_staged.clear()
                self.tenants.published.clear()
                await self._drain()
                await self._flush_due()
                await self._tick_absences()
                await self._sweep_if_due()
                self.maintenance.poke(self.pool)  # starts a background task when due
                delay = tun.reconnect_min_s
            except asyncio.CancelledError:
                return
            except CursorAheadError as exc:
                log.error("evaluation stopped: %s", exc)
                try:
                    await self._sleep(tun.reconnect_max_s)
                except asyncio.CancelledError:
                    return
                continue
            except CursorMovedError as exc:
                log.warning("cursor moved under us; re-reading it", extra={"error": str(exc)})
                continue
            except Exception as exc:  # a database outage, or a bug: never the end of the daemon
                if isinstance(exc, CONNECTION_ERRORS):
                    log.warning(
                        "database error; retrying", extra={"error": str(exc), "retry_s": delay}
                    )
                else:
                    log.exception("unexpected error in the evaluation loop; retrying")
                self.evaluator.position = None
                try:
                    await self._sleep(delay)
                except asyncio.CancelledError:
                    return
                delay = min(delay * 2, tun.reconnect_max_s)
                continue
            wait_s = min(tun.poll_interval_s, tun.sweep_interval_s)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake(), wait_s)

    async def _wake(self) -> None:
        waits = {
            asyncio.create_task(event.wait())
            for event in (self.stopping, self.doorbell, self.rules_staged, self.tenants.published)
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _ensure_leader(self) -> bool:
        was = self.stats.is_leader
        held = await self.leader.check() or await self.leader.try_acquire()
        if held and not was:
            log.info("leader: evaluating", extra={"cursor": self.settings.engine.cursor_name})
            self.evaluator.position = None  # re-read: the previous leader may have moved it
            self.absence.forget()
            # No rules to evaluate yet: wait for the compile (off the loop: /healthz answers).
            await self._compile_rules(only_if_changed=False)
            await self._take_all_rules()
        elif not held and was:
            log.warning("leadership lost; waiting as a standby")
            self.tenants.last_seq = None  # followed again from scratch when leading again
        elif not held and not was and not self._standby_announced:
            log.info("standby: another engine holds the cursor")
        self._standby_announced = not held  # say it once per standby period
        self.stats.is_leader = held
        return held

    async def _watch_rules(self) -> None:
        """While leading: look at the rule files every ``rules_watch_interval_s`` and
        compile a change in a thread; the loop swaps it in at its next batch boundary."""
        while True:
            await asyncio.sleep(self.settings.engine.rules_watch_interval_s)
            if not self.stats.is_leader:
                continue
            try:
                await self._compile_rules(only_if_changed=True)
            except Exception:  # a bug in a reload must not end the watch
                log.exception("rule reload failed; the current rules keep running")

    async def _follow_tenant_rules(self) -> None:
        """While leading: compile the organizations' rule changes as soon as a batch
        meets one not compiled (``tenants.wanted``), and every ``rules_watch_interval_s``
        ahead of the batches; read their quotas now and then."""
        tenants = self.tenants
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    tenants.wanted.wait(), self.settings.engine.rules_watch_interval_s
                )
            tenants.wanted.clear()
            if not self.stats.is_leader or self.pool is None:
                continue
            try:
                async with self.pool.acquire() as conn:
                    await tenants.refresh(conn)
                    if time.monotonic() >= self._next_quota_refresh:
                        rows = await conn.fetch(query("org_firing_quotas"))
                        self.evaluator.quota.limits = {
                            r["id"]: r["max_firings_per_minute"] for r in rows
                        }
                        self._next_quota_refresh = time.monotonic() + QUOTA_REFRESH_S
            except CONNECTION_ERRORS as exc:
                log.warning("rule changes not compiled; retrying", extra={"error": str(exc)})
                await asyncio.sleep(self.settings.engine.reconnect_min_s)
                tenants.wanted.set()  # the batches still wait for these changes
            except Exception:  # a bug here must not end the task: the next wake retries
                log.exception("rule changes not compiled")
                await asyncio.sleep(self.settings.engine.reconnect_min_s)

    async def _take_all_rules(self) -> None:
        """On taking the lead: the staged file rules and every organization's rule, in a
        new index (the previous leader may have changed anything)."""
        swap = self._staged
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            tenant_rules = await self.tenants.load_all(conn)
            if swap is None:  # no compile: the files as last loaded
                swap = RuleSwap(await asyncio.to_thread(self.rulebook.load))
            await self.rulebook.apply(conn, swap, fresh_with=tenant_rules)
            rows = await conn.fetch(query("org_firing_quotas"))
        # Before the first batch after taking the lead: the pause of one collection here
        # delays nothing yet.
        freeze_long_lived(collect_first=True)
        self.evaluator.quota.limits = {r["id"]: r["max_firings_per_minute"] for r in rows}
        self._next_quota_refresh = time.monotonic() + QUOTA_REFRESH_S
        if self._staged is swap:
            self._staged = None

    async def _compile_rules(self, *, only_if_changed: bool) -> None:
        """Load and compile the rule files in a thread and stage the result."""
        async with self._compiling:
            if only_if_changed:
                if not await asyncio.to_thread(self.rulebook.changed):
                    return
                log.info("rule files changed; reloading")
            swap = await asyncio.to_thread(self.rulebook.compile)
            self._staged = swap
            self.rules_staged.set()
            log.info("rules compiled", extra={"rules": len(swap.rules)})

    async def _swap_staged_rules(self) -> None:
        """Mirror and swap in the staged rules, if any.  Only between batches: a reset of
        a rule's state must commit before the new rules evaluate, and never race a batch
        writing that state."""
        swap = self._staged
        if swap is None:
            return
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await self.rulebook.apply(conn, swap)
        freeze_long_lived(collect_first=False)
        if self._staged is swap:  # a newer compile may have been staged meanwhile
            self._staged = None

    async def _drain(self) -> None:
        """Evaluate batches until the cursor has caught up."""
        assert self.pool is not None
        # After a batch failed because of its rows, the rows of that batch are evaluated
        # one by one (isolating counts them down) until the culprit is found and skipped.
        isolating = 0
        while not self.stopping.is_set():
            await self._swap_staged_rules()  # a batch boundary
            index = self.rulebook.index
            if index is None:
                return
            async with self.pool.acquire() as conn:
                try:
                    result = await self.evaluator.run_batch(
                        conn,
                        index,
                        limit=1 if isolating else None,
                        tenants=self.tenants,
                        isolating=bool(isolating),
                    )
                except POISON_ERRORS as exc:
                    isolating = await self._isolate(conn, isolating, exc)
                    continue
            if result.read == 0 and result.released == 0 and not result.action_ids:
                self.stats.add_reorgs(result)  # removals alone (no on_retract to send)
                return
            isolating = max(0, isolating - result.read)
            self.stats.add(result)
            await self._dispatch(result.action_ids, result.action_orgs)
            if result.caught_up(self.evaluator.batch_size) and not isolating:
                return
            # A long catch-up must hold back neither due digests nor due retries.
            await self._flush_due()
            await self._sweep_if_due()

    async def _tick_absences(self) -> None:
        """Fire the absence groups gone quiet (engine.absence): once caught up, one chunk
        at a time, so the next batch waits for one chunk at most."""
        index = self.rulebook.index
        if index is None or not index.absence_rules or not self.absence.due(time.monotonic()):
            return
        assert self.pool is not None
        disabled = self.evaluator.noise.disabled  # at runtime: not evaluated, not ticked
        rules = {i: r for i, r in index.absence_rules.items() if i not in disabled}
        async with self.pool.acquire() as conn:
            result = await self.absence.tick(conn, rules, time.time(), self.evaluator.quota)
        self.stats.absence_fired += result.fired
        await self._dispatch(result.action_ids, result.action_orgs)
        if result.more:
            self.doorbell.set()  # another chunk after the batches waiting, if any

    async def _isolate(self, conn: asyncpg.Connection, isolating: int, exc: Exception) -> int:
        """A batch failed because of its rows: find the row one by one, then skip it.

        Returns how many rows are still to be evaluated one by one.
        """
        if not isolating:
            log.warning(
                "a batch could not be recorded; evaluating its rows one by one",
                extra={"error": str(exc)[:500]},
            )
            return self.evaluator.batch_size
        event_id = await self.evaluator.skip_next(conn)
        self.stats.errors += 1
        self.stats.skipped += 1
        log.error(
            "event skipped: its evaluation could not be recorded",
            extra={"event_id": event_id, "error": str(exc)[:500]},
        )
        return max(0, isolating - 1)

    async def _flush_due(self) -> None:
        """The time-driven work, between batches: due digests and `resolve.after`.  Each
        commits its queued rows with its state change; they are enqueued after it.

        At most every FLUSH_INTERVAL_S: a catch-up or a busy stream runs a batch every few
        milliseconds, and two transactions after each would cost the evaluation more than
        the precision they buy (a digest's `wait` is a second at least)."""
        index = self.rulebook.index
        if index is None or time.monotonic() < self._next_flush:
            return
        self._next_flush = time.monotonic() + FLUSH_INTERVAL_S
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            digests = await flush_due_digests(conn, index, time.time())
            await self._dispatch(digests.action_ids, digests.action_orgs)
            resolved = await resolve_quiet_alerts(conn, index, time.time())
            await self._dispatch(resolved.action_ids, resolved.action_orgs)
        self.stats.digests += digests.sent
        self.stats.resolved_by_after += resolved.sent

    async def _sweep_if_due(self) -> None:
        if time.monotonic() >= self._next_sweep:
            await self.sweep()
            self._next_sweep = time.monotonic() + self.settings.engine.sweep_interval_s

    async def _dispatch(self, action_ids: list[int], org_of: dict[int, int]) -> None:
        """Enqueue the batch's jobs, each organization's on its own queue (fairness)."""
        if not action_ids:
            return
        try:
            await asyncio.to_thread(self.dispatcher.enqueue, action_ids, org_of)
        except redis.RedisError as exc:
            self.stats.enqueue_failures += 1
            self._redis_down(exc)
        else:
            self._redis_up()

    def _redis_down(self, exc: Exception) -> None:
        """Say it once per outage, not once per batch."""
        if not self._redis_outage:
            self._redis_outage = True
            log.warning(
                "redis unavailable: actions stay queued for the sweep", extra={"error": str(exc)}
            )

    def _redis_up(self) -> None:
        if self._redis_outage:
            self._redis_outage = False
            log.info("redis is back: dispatching again")

    async def sweep(self) -> int:
        """Run the dispatcher's sweep (engine.dispatcher.sweep) now; how many it re-enqueued."""
        assert self.pool is not None
        try:
            swept = await sweep_actions(
                self.dispatcher,
                self.pool,
                grace_s=self.settings.engine.sweep_grace_s,
                batch_size=self.settings.worker.sweep_batch_size,
                crash_attempts=self.settings.worker.crash_attempts,
            )
        except redis.RedisError as exc:
            self._redis_down(exc)
            return 0
        if swept is None:
            return 0
        self._redis_up()
        return swept
