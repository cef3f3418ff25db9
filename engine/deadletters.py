"""``engine actions failed`` / ``engine actions retry``: list and replay dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sql
from engine.config import Settings
from engine.dispatcher import Dispatcher
from rules.durations import parse_duration


def list_failed(
    settings: Settings, *, rule: str | None, kind: str | None, within: str, limit: int = 500
) -> list[dict[str, Any]]:
    seconds = parse_duration(within)
    with sql.connect(settings.database_url) as conn:
        rows = sql.fetch_all(conn, "failed_actions", rule, kind, seconds, limit)
    keys = (
        "id",
        "rule",
        "event_id",
        "type",
        "name",
        "attempts",
        "error",
        "created_at",
        "executed_at",
    )
    return [dict(zip(keys, row, strict=True)) for row in rows]


def format_failed(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "no failed actions"
    lines = [f"{'id':>8}  {'rule':<24} {'type':<9} {'attempts':>8}  error"]
    for r in rows:
        error = (r["error"] or "").replace("\n", " ")[:80]
        lines.append(f"{r['id']:>8}  {r['rule']:<24} {r['type']:<9} {r['attempts']:>8}  {error}")
    return "\n".join(lines)


def retry_failed(settings: Settings, ids: Sequence[int], *, all_failed: bool) -> list[int]:
    """Put dead letters back to 'queued' with fresh attempts, and enqueue them."""
    with sql.connect(settings.database_url) as conn:
        if all_failed:
            ids = [r[0] for r in sql.fetch_all(conn, "failed_actions", None, None, 10**9, 10**6)]
        rows = sql.fetch_all(conn, "requeue_failed", list(ids))
    requeued = [r[0] for r in rows]
    dispatcher = Dispatcher(settings.redis_url, settings.worker)
    try:
        dispatcher.enqueue(requeued, {r[0]: r[1] for r in rows})
    finally:
        dispatcher.close()
    return requeued
