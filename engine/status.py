"""``engine status``: what an operator asks first — is it keeping up, is anything stuck.

``collect_status`` gathers a JSON-safe snapshot from the database, the rule files and
Redis; ``format_status`` renders it as a readable table.  Each source is asked
separately so that one being down (Redis, typically) still leaves the rest visible.
It only reads: it never changes a row, a job or a rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, Worker

import sql
from actions.claims import ActionStatus
from actions.flood import blocked_chats, bot_key
from engine.config import Settings
from engine.silences import format_disables, format_silences, list_disables, list_silences

ACTION_STATUSES = tuple(status.value for status in ActionStatus)
RATE_WINDOW_S = 60
REDIS_TIMEOUT_S = 3


def collect_status(settings: Settings) -> dict[str, Any]:
    """A JSON-safe snapshot of cursors, event rate, rules, actions and the queue."""
    status: dict[str, Any] = {}
    with sql.connect(settings.database_url) as conn:
        status["cursors"] = [
            {
                "name": r[0],
                "txid": r[1],
                "seq": r[2],
                "events_evaluated": r[3],
                "updated_at": r[4],
                "seconds_since_advance": r[5],
                "pending_events": r[6],
                "lag_seconds": r[7],
            }
            for r in sql.fetch_all(conn, "status_cursor_lag")
        ]
        rate = sql.fetch_one(conn, "status_event_rate")
        status["events_per_second"] = round((rate[0] if rate else 0) / RATE_WINDOW_S, 2)
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
        triggers = sql.fetch_one(conn, "status_triggers")
        status["rules"] = {
            "loaded": triggers[0] if triggers else 0,
            "enabled": triggers[1] if triggers else 0,
            "last_change": triggers[2] if triggers else None,
            "file_errors": _rule_file_errors(settings),
        }
        counts = {r[0]: r[1] for r in sql.fetch_all(conn, "status_actions")}
        oldest = sql.fetch_one(conn, "status_oldest_queued")
        status["actions"] = {
            **{name: counts.get(name, 0) for name in ACTION_STATUSES},
            "oldest_queued_seconds": oldest[0] if oldest else None,
        }
        status["rules_last_hour"] = [
            # sum() of bigint is numeric: Decimal, which JSON would print as a string
            {
                "rule": r[0],
                "matched": int(r[1]),
                "fired": int(r[2]),
                "suppressed": int(r[3]),
                "errors": int(r[4]),
            }
            for r in sql.fetch_all(conn, "status_rules")
        ]
        status["reorgs"] = {
            r[0]: {"count": r[1], "last_seen": r[2]} for r in sql.fetch_all(conn, "status_reorgs")
        }
        status["chains"] = _chains_status(conn, settings)
        pending = sql.fetch_one(conn, "status_digests")
        assert pending is not None
        status["digests"] = {
            "groups_pending": pending[0],
            "firings_pending": pending[1],
            "next_due_in_seconds": None if pending[2] is None else max(0.0, round(pending[2], 1)),
            "open_alerts": pending[3],
        }
        status["silences"] = list_silences(conn, include_expired=False)
        status["disabled_rules"] = list_disables(conn)
        absence = sql.fetch_one(conn, "status_absence")
        status["absence_groups"] = dict(
            zip(("watched", "armed", "due"), absence or (0, 0, 0), strict=True)
        )
    status["queue"] = _queue_status(settings)
    status["telegram_blocks"] = _telegram_blocks(settings)
    return status


def _chains_status(conn: sql.Connection, settings: Settings) -> list[dict[str, Any]]:
    """Per chain with a head noted or confirmations configured: its head and where it
    comes from, its held events and how long the oldest has waited (engine.confirmations)."""
    chains = settings.chains
    found = {}
    for chain_id, head, source, held, lowest, oldest_s in sql.fetch_all(
        conn, "status_chains", settings.engine.cursor_name
    ):
        n = chains.confirmations_of(chain_id)
        found[chain_id] = {
            "chain_id": chain_id,
            "name": chains.name_of(chain_id),
            "confirmations": n,
            "head": head,
            "head_source": source,
            "held_events": held,
            "lowest_held_block": lowest,
            "oldest_held_seconds": oldest_s,
            # How many more blocks the oldest held event waits for (0: due now).
            "blocks_to_release": None if lowest is None else max(0, lowest + n - head),
        }
    for chain_id, entry in chains.by_id.items():
        if chain_id not in found and entry.confirmations > 0:
            found[chain_id] = {
                "chain_id": chain_id,
                "name": entry.name,
                "confirmations": entry.confirmations,
                "head": None,
                "head_source": None,
                "held_events": 0,
                "lowest_held_block": None,
                "oldest_held_seconds": 0,
                "blocks_to_release": None,
            }
    return [found[k] for k in sorted(found)]


def _rule_file_errors(settings: Settings) -> list[str]:
    """Errors in the configured rule files as they are now (``engine run`` would reject
    them and keep its previous rules), so a bad edit shows up here."""
    from rules import load_rules

    try:
        result = load_rules(list(settings.rules), **settings.rule_loading())
    except Exception as exc:  # a status report must not die of a rule problem
        return [f"cannot load the rule files: {exc}"]
    return [str(error) for error in result.errors]


def _queue_status(settings: Settings) -> dict[str, Any]:
    name = settings.worker.queue
    connection = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
    )
    try:
        queue = Queue(name, connection=connection)
        workers = Worker.all(queue=queue)
        return {
            "name": name,
            "depth": queue.count,
            "started_jobs": queue.started_job_registry.count,
            "failed_jobs": queue.failed_job_registry.count,
            "organizations": _org_queue_depths(connection, settings),
            "workers": [
                {
                    "name": worker.name,
                    "state": str(getattr(worker.get_state(), "value", worker.get_state())),
                    "current_job": worker.get_current_job_id(),
                    "last_heartbeat": worker.last_heartbeat,
                }
                for worker in sorted(workers, key=lambda w: str(w.name))
            ],
        }
    except redis.RedisError as exc:
        return {"name": name, "error": str(exc)}
    finally:
        connection.close()


def _telegram_blocks(settings: Settings) -> dict[str, Any]:
    """Chats that no worker sends to because Telegram answered 429 (actions.flood)."""
    names = {bot_key(token): name for name, token in settings.actions.telegram_bots.items()}
    connection = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
    )
    now = dt.datetime.now(dt.UTC)
    try:
        blocks = blocked_chats(connection)
    except redis.RedisError as exc:
        return {"error": str(exc), "chats": []}
    finally:
        connection.close()
    return {
        "chats": [
            {
                "bot": names.get(block.bot, block.bot),
                "chat_id": block.chat_id,
                "until": (now + dt.timedelta(seconds=block.seconds_left)).isoformat(
                    timespec="seconds"
                ),
                "seconds_left": round(block.seconds_left),
            }
            for block in blocks
        ]
    }


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], *, label_column: bool = True
) -> list[str]:
    """Right-aligned values (a left-aligned first column of labels), widths from the data."""
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        first = row[0].ljust(widths[0]) if label_column else row[0].rjust(widths[0])
        rest = "  ".join(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        lines.append(f"  {first}  {rest}".rstrip())
    return lines


def _seconds(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value}s"
    if value < 7200:
        return f"{value // 60}m"
    return f"{value // 3600}h{value % 3600 // 60:02d}m"


def format_status(status: dict[str, Any]) -> str:
    """The snapshot as a few small tables, in the order an operator reads them."""
    lines = ["cursors"]
    if status["cursors"]:
        lines += _table(
            ("name", "evaluated", "pending", "lag", "last advance"),
            [
                (
                    c["name"],
                    c["events_evaluated"],
                    c["pending_events"],
                    _seconds(c["lag_seconds"]),
                    _seconds(c["seconds_since_advance"]) + " ago",
                )
                for c in status["cursors"]
            ],
        )
    else:
        lines.append("  none yet: `engine run` creates its cursor when it first leads")
    blocker = status.get("oldest_transaction")
    if blocker and any(c["pending_events"] for c in status["cursors"]):
        lines.append(
            f"  oldest open transaction (holds pending events back): pid {blocker['pid']}, "
            f"running for {blocker['running_for']}"
        )
    lines.append(f"events written: {status['events_per_second']}/s over the last minute")
    lines += _format_reorgs(status.get("reorgs", {}))
    lines += _format_digests(status.get("digests", {}))

    rules = status["rules"]
    lines.append(f"rules: {rules['loaded']} loaded ({rules['enabled']} enabled)")
    if rules["file_errors"]:
        lines.append(
            f"  {len(rules['file_errors'])} error(s) in the rule files "
            "(engine run keeps its previous rules):"
        )
        lines += [f"    {error}" for error in rules["file_errors"]]
    if status["rules_last_hour"]:
        lines.append("firings, current and previous hour")
        lines += _table(
            ("rule", "matched", "fired", "suppressed", "errors"),
            [
                (r["rule"], r["matched"], r["fired"], r["suppressed"], r["errors"])
                for r in status["rules_last_hour"]
            ],
        )

    lines += _format_chains(status.get("chains") or [])
    if status.get("silences"):
        lines.append("silences (`engine silence list`; firings they match are recorded, not sent)")
        lines += format_silences(status["silences"])
    if status.get("disabled_rules"):
        lines.append("rules disabled at runtime (`engine rules enable ID`)")
        lines += format_disables(status["disabled_rules"])
    absence = status.get("absence_groups") or {}
    if absence.get("watched"):
        lines.append(
            f"absence groups (when.absent): {absence['watched']} watched, {absence['armed']}"
            f" armed, {absence['due']} due now"
        )

    actions = status["actions"]
    lines.append("actions")
    lines += _table(ACTION_STATUSES, [[actions[k] for k in ACTION_STATUSES]], label_column=False)
    if actions[ActionStatus.QUEUED] and actions.get("oldest_queued_seconds") is not None:
        lines.append(f"  oldest queued: {_seconds(actions['oldest_queued_seconds'])} ago")
    if actions[ActionStatus.FAILED]:
        lines.append("  dead letters: `engine actions failed`, replay with `engine actions retry`")

    lines += _format_queue(status["queue"])
    lines += _format_telegram_blocks(status.get("telegram_blocks", {}))
    return "\n".join(lines)


#: The organizations' queues `engine status` lists, deepest first.
MOST_ORG_QUEUES_SHOWN = 10


def _org_queue_depths(connection: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """The organizations whose queue has jobs waiting, deepest first."""
    prefix = settings.worker.org_queue_prefix
    depths = [
        {"org_id": int(queue.name.removeprefix(prefix)), "depth": queue.count}
        for queue in Queue.all(connection=connection)
        if queue.name.startswith(prefix) and queue.name.removeprefix(prefix).isdigit()
    ]
    return sorted((d for d in depths if d["depth"]), key=lambda d: (-d["depth"], d["org_id"]))


def _format_queue(queue: dict[str, Any]) -> list[str]:
    if "error" in queue:
        return [f"queue {queue['name']}: Redis unavailable ({queue['error']})"]
    lines = [
        f"queue {queue['name']}: {queue['depth']} waiting, {queue['started_jobs']} running, "
        f"{queue['failed_jobs']} in RQ's failed registry; {len(queue['workers'])} worker(s)"
    ]
    orgs = queue.get("organizations") or []
    if orgs:
        lines.append(
            f"organizations' queues: {sum(o['depth'] for o in orgs)} waiting"
            f" in {len(orgs)} queue(s), each taken in turn"
        )
        lines += _table(
            ("organization", "waiting"),
            [(o["org_id"], o["depth"]) for o in orgs[:MOST_ORG_QUEUES_SHOWN]],
        )
    if queue["workers"]:
        lines += _table(
            ("worker", "state", "current job"),
            [(w["name"], w["state"], w["current_job"]) for w in queue["workers"]],
        )
    return lines


def _format_chains(chains: list[dict[str, Any]]) -> list[str]:
    if not chains:
        return []
    return [
        "chains (events wait for their confirmations; head from checkpoints, else the "
        "highest block seen)",
        *_table(
            ("chain", "confirmations", "head", "head from", "held", "oldest held", "blocks to go"),
            [
                (
                    f"{c['chain_id']} {c['name']}" if c["name"] else c["chain_id"],
                    c["confirmations"],
                    c["head"],
                    c["head_source"],
                    c["held_events"],
                    _seconds(c["oldest_held_seconds"]) if c["held_events"] else None,
                    c["blocks_to_release"],
                )
                for c in chains
            ],
        ),
    ]


def _format_telegram_blocks(blocks: dict[str, Any]) -> list[str]:
    if not blocks.get("chats"):
        return []  # no news; a Redis outage is already reported with the queue
    return [
        "telegram chats on hold after a 429 (flood control)",
        *_table(
            ("bot", "chat", "until", "left"),
            [
                (c["bot"], c["chat_id"], c["until"], _seconds(c["seconds_left"]))
                for c in blocks["chats"]
            ],
        ),
    ]


def _format_digests(digests: dict[str, Any]) -> list[str]:
    """One line while digests wait to be sent or alerts are open (rules' group/resolve)."""
    if not digests or not (digests["groups_pending"] or digests["open_alerts"]):
        return []
    due = digests["next_due_in_seconds"]
    when = "" if due is None else f", the next due in {due:g}s"
    return [
        f"digests: {digests['firings_pending']} firings waiting in"
        f" {digests['groups_pending']} groups{when}; open alerts (resolve): "
        f"{digests['open_alerts']}"
    ]


def _format_reorgs(reorgs: dict[str, Any]) -> list[str]:
    """One line when the indexer ever rewrote or deleted an evaluated event (a reorg)."""
    if not reorgs:
        return []
    parts = []
    for kind, label in (("rewrite", "ids written again"), ("retraction", "events retracted")):
        seen = reorgs.get(kind)
        if seen:
            parts.append(f"{label}: {seen['count']} (last {seen['last_seen']})")
    return ["reorgs after evaluation (event_reorgs): " + "; ".join(parts)]
