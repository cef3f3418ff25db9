"""``engine status``: what an operator asks first — is it keeping up, is anything stuck."""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue

import sql
from engine.config import Settings


def collect_status(settings: Settings) -> dict[str, Any]:
    """A JSON-safe snapshot of cursors, actions, rules and the queue."""
    status: dict[str, Any] = {}
    with sql.connect(settings.database_url) as conn:
        status["cursors"] = [
            {
                "name": r[0],
                "txid": r[1],
                "seq": r[2],
                "events_evaluated": r[3],
                "updated_at": r[4],
                "pending_events": r[5],
                "xmin": r[6],
            }
            for r in sql.fetch_all(conn, "status_cursor")
        ]
        blocker = sql.fetch_one(conn, "status_blocker")
        status["oldest_transaction"] = (
            None
            if blocker is None
            else {
                "pid": blocker[0],
                "xid": blocker[1],
                "running_for": blocker[2],
                "query": blocker[3],
            }
        )
        status["actions"] = {r[0]: r[1] for r in sql.fetch_all(conn, "status_actions")}
        status["rules_last_hour"] = [
            {"rule": r[0], "matched": r[1], "fired": r[2], "suppressed": r[3], "errors": r[4]}
            for r in sql.fetch_all(conn, "status_rules")
        ]
    try:
        connection = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
        queue = Queue(settings.worker.queue, connection=connection)
        status["queue"] = {"name": queue.name, "depth": queue.count}
    except redis.RedisError as exc:
        status["queue"] = {"name": settings.worker.queue, "error": str(exc)}
    return status


def format_status(status: dict[str, Any]) -> str:
    lines = []
    for c in status["cursors"]:
        lines.append(
            f"cursor {c['name']}: {c['events_evaluated']} events evaluated, "
            f"{c['pending_events']} pending"
        )
    blocker = status.get("oldest_transaction")
    if blocker and any(c["pending_events"] for c in status["cursors"]):
        lines.append(
            f"  oldest open transaction: pid {blocker['pid']} running for {blocker['running_for']}"
        )
    actions = status["actions"]
    order = ("queued", "running", "retrying", "success", "failed")
    lines.append("actions: " + ", ".join(f"{k} {actions.get(k, 0)}" for k in order))
    queue = status["queue"]
    lines.append(
        f"queue {queue['name']}: "
        + (f"{queue['depth']} job(s)" if "depth" in queue else f"unavailable ({queue['error']})")
    )
    if status["rules_last_hour"]:
        lines.append("rules, last hour:   matched   fired  suppressed  errors")
        for r in status["rules_last_hour"]:
            lines.append(
                f"  {r['rule']:<18}{r['matched']:>8}{r['fired']:>8}"
                f"{r['suppressed']:>12}{r['errors']:>8}"
            )
    return "\n".join(lines)
