"""What ``engine run`` counts about itself, for /metrics and the logs (engine.http)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.evaluator import BatchResult


@dataclass
class DaemonStats:
    """What /metrics and the logs report about this process."""

    started_at: float = field(default_factory=time.time)
    is_leader: bool = False
    events: int = 0
    fired: int = 0
    suppressed: int = 0
    errors: int = 0
    unusual: int = 0
    future_events: int = 0  # stamped too far ahead: evaluated, no time-based state advanced
    skipped: int = 0  # rows whose evaluation could not be recorded
    quota_exceeded: int = 0  # firings held back by their organization's quota
    absence_fired: int = 0  # absence groups fired by ticks (engine.absence)
    batches: int = 0
    restarts: int = 0  # batches started over (evaluator.BatchResult.restarts)
    rewrites: int = 0  # ids written again after their evaluation (engine.reorgs)
    retractions: int = 0  # evaluated events the indexer deleted (engine.reorgs)
    enqueue_failures: int = 0
    digests: int = 0  # digests queued (engine.digests)
    resolved_by_after: int = 0  # alerts resolved by `resolve.after` (engine.resolves)
    held: int = 0  # rows read that waited for their confirmations (per batch, summed)
    released: int = 0  # rows evaluated through chain cursors (engine.confirmations)
    last_event_timestamp: int | None = None

    def add(self, result: BatchResult) -> None:
        """Count one evaluated batch."""
        self.events += result.events
        self.fired += result.fired
        self.suppressed += result.suppressed
        self.errors += result.errors
        self.unusual += result.unusual
        self.future_events += result.future_events
        self.quota_exceeded += result.quota_exceeded
        self.batches += 1
        self.restarts += result.restarts
        self.add_reorgs(result)
        self.held += result.held
        self.released += result.released
        if result.last_event_timestamp is not None:
            self.last_event_timestamp = result.last_event_timestamp

    def add_reorgs(self, result: BatchResult) -> None:
        """Count what a batch found of reorgs (engine.reorgs), even one that read nothing."""
        self.rewrites += result.rewrites
        self.retractions += result.retractions
