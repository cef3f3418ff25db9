"""Every tunable of the engine, one section of config.yaml a class, units in the names.

The engine's defaults live here (the executors' own in ``actions.base.ActionSettings``);
``engine.config`` reads the sections from the config file and ``ENGINE_*`` overrides into
these classes.  Nothing here reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineTunables:
    """``engine:`` section: the evaluator loop, its connections and its HTTP endpoints."""

    cursor_name: str = "main"
    poll_interval_s: float = 1.0  # a lost NOTIFY costs at most this long
    batch_size: int = 2000  # events read and committed per transaction
    sweep_interval_s: float = 1.0  # how often queued/retrying/expired rows are re-enqueued
    sweep_grace_s: float = 5.0  # a queued row younger than this is the dispatcher's
    reconnect_min_s: float = 0.2  # database and listener reconnect backoff, first wait
    reconnect_max_s: float = 10.0  # ... and longest wait
    rules_watch_interval_s: float = 1.0  # how often the rule files are checked for changes
    standby_retry_s: float = 1.0  # how often a standby tries to become the leader
    db_pool_min_size: int = 1  # connections the evaluator's pool keeps open
    db_pool_max_size: int = 4  # evaluation, rule mirror, maintenance and /metrics share it
    db_connect_timeout_s: float = 10.0  # opening any connection of `engine run`
    leader_check_timeout_s: float = 5.0  # the leader's round trip on its lock's connection
    listener_ping_timeout_s: float = 2.0  # the listener's liveness query (at least poll_interval_s)
    http_request_timeout_s: float = 5.0  # a client sending its request head
    ready_probe_timeout_s: float = 2.0  # each of /readyz's database and NOTIFY probes
    metrics_query_timeout_s: float = 5.0  # each database query of a /metrics scrape
    # An event stamped further ahead of the evaluator's clock is evaluated but advances no
    # time-based state (rules.stateful): one bad timestamp must not silence a rule.
    max_event_future_skew_s: int = 300
    # How often `engine run` and `engine worker` re-read the silences and runtime disables:
    # one a process has not read yet is applied this long after it is made, at most.
    silences_refresh_s: float = 1.0
    absence_tick_interval_s: float = 1.0  # how often absence rules' quiet groups are looked for
    absence_tick_rows: int = 100  # quiet groups fired per transaction, between two batches


@dataclass(frozen=True)
class WorkerTunables:
    """``worker:`` section: RQ workers."""

    queue: str = "engine-actions"
    job_timeout_s: float = 120.0  # hard limit of one attempt
    lease_margin_s: float = 30.0  # a running row is taken over this long after its timeout
    concurrency: int = 8  # jobs a worker process runs at once in its event loop
    crash_attempts: int = 2  # extra attempts for a row whose worker died mid-attempt
    sweep_batch_size: int = 1000  # rows `engine run`'s sweep re-enqueues per round
    db_reconnect_min_s: float = 0.2  # a worker's first wait for an unavailable database
    db_reconnect_max_s: float = 5.0  # its longest wait between reconnects
    db_reconnect_deadline_s: float = 30.0  # then the action is left to the sweep
    redis_reconnect_min_s: float = 0.5  # a worker's first wait for an unavailable Redis
    redis_reconnect_max_s: float = 10.0  # its longest wait between restarts
    # The longest one attempt of each kind may take, render included (a rule's `timeout`
    # above it is refused at load): an endpoint that never answers holds one of the
    # worker's `concurrency` slots for at most this long.  Telegram's is longer than a
    # webhook's because a split message waits out short flood limits between its parts.
    max_rest_timeout_s: float = 30.0
    max_telegram_timeout_s: float = 60.0
    max_mcp_timeout_s: float = 120.0
    # An RQ job waits this long for the actions it runs at once, then leaves the slower
    # ones running in the background and the worker takes its next job.
    batch_wait_s: float = 1.0
    # How often a worker looks for organizations' queues it does not listen on yet: the
    # longest a new organization's first job waits while the workers are idle or busy.
    queue_refresh_s: float = 0.5
    render_timeout_s: float = 2.0  # one action's templates, in the render process
    render_memory_mb: int = 256  # what the render process may allocate beyond its start

    @property
    def org_queue_prefix(self) -> str:
        """Every organization's RQ queue name starts with this (then its id)."""
        return f"{self.queue}:org:"

    def queue_of(self, org_id: int | None) -> str:
        """The RQ queue of an action: ``queue`` for the operator's file rules, a queue of
        its own for each organization (workers take from them in turn: docs/tenants.md)."""
        return self.queue if org_id is None else f"{self.org_queue_prefix}{org_id}"

    @property
    def max_action_timeouts_s(self) -> dict[str, float]:
        """The longest attempt of each action kind (the keys are the rule's action kinds);
        none longer than job_timeout_s, the hard limit of any attempt."""
        limits = {
            "rest": self.max_rest_timeout_s,
            "telegram": self.max_telegram_timeout_s,
            "mcp": self.max_mcp_timeout_s,
        }
        return {kind: min(limit, self.job_timeout_s) for kind, limit in limits.items()}


@dataclass(frozen=True)
class RetentionSettings:
    """``retention:`` section: how long rows are kept, and the statistics refresh."""

    action_results_days: int = 90  # finished (success/failed) audit rows
    events_days: int = 365  # events, never one a cursor has not evaluated yet
    trigger_changes_days: int = 7  # the log of rule changes the daemon follows
    interval_s: float = 3600.0  # how often `engine run` applies retention
    stats_refresh_s: float = 300.0  # how often the hourly statistics views are refreshed
    delete_batch_size: int = 5000  # rows per DELETE, so no statement holds locks for long


@dataclass(frozen=True)
class ApiSettings:
    """``api:`` section: `engine api`, the tenants' HTTP API (its own process)."""

    listen: str = "127.0.0.1:8080"  # host:port
    max_body_bytes: int = 1024 * 1024  # a bigger request body answers 413
    db_pool_min_size: int = 1  # connections each `engine api` process keeps open
    db_pool_max_size: int = 10  # requests served at once per process, one connection each
    db_connect_timeout_s: float = 10.0  # opening a connection, and waiting for a free one
    # A backtest through the API reads at most this many events (the oldest of its range)
    # and stops reading and evaluating after backtest_timeout_s; its answer says so.
    backtest_max_events: int = 100_000
    backtest_timeout_s: float = 10.0
    backtest_max_firings: int = 1000  # firings one backtest answer lists at most


@dataclass(frozen=True)
class RuleFileLimits:
    """``rule_files:`` section: bounds on what loading one rule file may cost."""

    # Values one rule (or one `x-…` key) may get through YAML aliases: a few hundred bytes
    # of aliases can otherwise stand for millions of values.
    max_aliased_values: int = 10_000


@dataclass(frozen=True)
class TenantSettings:
    """``tenants:`` section: what an organization gets when its own column is NULL."""

    max_rules: int = 1000  # rules one organization may store
    max_firings_per_minute: int = 600  # firings one organization's rules may queue a minute
