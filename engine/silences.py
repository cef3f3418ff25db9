"""Silences and runtime disables as the operator and the API make them: what a request
must say, checked with advice, and the operator's commands over the database.

`engine silence add|list|expire` and `engine rules disable|enable` (wired by
engine.noise_commands) act for the operator as the tables' owner; the tenant API
(engine.api.routes_silences) writes the same rows as its organization.  Every running
`engine run` and `engine worker` picks a change up within ``engine.silences_refresh_s``
(engine.noise_controls, actions.silence_gate).  This module never evaluates a rule.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sql
from rules.durations import DurationError, parse_duration
from rules.errors import EngineError
from rules.silence_match import parse_matcher

MAX_GLOB_CHARS = 200
MAX_COMMENT_CHARS = 2000
#: The columns of the silence_add and silences_list queries, in their order.
SILENCE_COLUMNS = (
    "id",
    "org_id",
    "rule_glob",
    "matchers",
    "starts_at",
    "ends_at",
    "created_by",
    "comment",
    "expired_by",
    "created_at",
    "active",
)


@dataclass(frozen=True)
class SilenceRequest:
    """A silence as asked for, checked: the end is either ``until`` or ``for_s`` from now."""

    rule_glob: str
    matchers: dict[str, str]
    comment: str
    until: dt.datetime | None = None
    for_s: int | None = None


def check_silence(
    rule_glob: str,
    matchers: Iterable[str] | dict[str, Any],
    comment: str | None,
    *,
    for_text: str | None = None,
    until_text: str | None = None,
    now: dt.datetime | None = None,
) -> SilenceRequest:
    """The request checked; EngineError (advice) for the first thing wrong with it."""
    glob = (rule_glob or "").strip()
    if not glob or len(glob) > MAX_GLOB_CHARS:
        raise EngineError(
            f"the rule glob must be 1 to {MAX_GLOB_CHARS} characters, e.g. 'agent-42-*' or '*'"
        )
    if isinstance(matchers, dict):
        pairs = {str(k): str(v) for k, v in matchers.items()}
    else:
        pairs = {}
        for text in matchers:
            try:
                name, value = parse_matcher(text)
            except ValueError as exc:
                raise EngineError(str(exc)) from None
            pairs[name] = value
    text = (comment or "").strip()
    if not text or len(text) > MAX_COMMENT_CHARS:
        raise EngineError(
            "a silence needs a comment saying why (who is working on what), at most"
            f" {MAX_COMMENT_CHARS} characters"
        )
    if (for_text is None) == (until_text is None):
        raise EngineError("say how long the silence lasts: either --for DURATION or --until TIME")
    if for_text is not None:
        return SilenceRequest(glob, pairs, text, for_s=duration_s(for_text, "--for"))
    until = parse_time(until_text or "", "--until")
    if until <= (now or dt.datetime.now(dt.UTC)):
        raise EngineError(f"--until {until_text} is in the past; a silence must end later")
    return SilenceRequest(glob, pairs, text, until=until)


def duration_s(text: str, option: str) -> int:
    """Seconds of ``text`` (30s, 15m, 2h, 7d) for ``option``; EngineError with advice."""
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise EngineError(f"{option} {exc}") from None


def parse_time(text: str, option: str) -> dt.datetime:
    """An ISO 8601 time (UTC when it names no offset)."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise EngineError(
            f"{option} must be an ISO 8601 time such as 2026-12-01T09:00 or"
            f" 2026-12-01T09:00+02:00 (UTC when no offset is given; got {text!r})"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def os_user() -> str:
    """Who the CLI acts for: the OS user."""
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


def silence_row(row: Sequence[Any]) -> dict[str, Any]:
    """A silences row of the silence_add / silences_list queries as a mapping."""
    item = dict(zip(SILENCE_COLUMNS, row, strict=True))
    if isinstance(item["matchers"], str):
        item["matchers"] = json.loads(item["matchers"])
    return item


def add_silence(conn: sql.Connection, request: SilenceRequest, who: str) -> dict[str, Any]:
    """The operator's silence (org_id NULL: it applies to every rule its glob matches)."""
    row = sql.fetch_one(
        conn,
        "silence_add",
        None,
        request.rule_glob,
        json.dumps(request.matchers),
        who,
        request.until,
        request.for_s,
        request.comment,
    )
    assert row is not None
    return silence_row(row)


def list_silences(conn: sql.Connection, *, include_expired: bool) -> list[dict[str, Any]]:
    return [silence_row(r) for r in sql.fetch_all(conn, "silences_list", include_expired)]


def expire_silence(conn: sql.Connection, silence_id: int, who: str) -> bool:
    """End the silence now; whether it was still active.  EngineError when there is none."""
    row = sql.fetch_one(conn, "silence_expire", silence_id, who)
    if row is None:
        raise EngineError(
            f"there is no silence {silence_id} (`engine silence list --all` shows them)"
        )
    return bool(row[1])


def disable_rule(
    conn: sql.Connection, rule_id: str, for_s: int | None, who: str, comment: str | None
) -> dict[str, Any]:
    """Persist a runtime disable of a loaded rule (engine-wide id)."""
    rule = sql.fetch_one(conn, "rule_of_id", rule_id)
    if rule is None:
        raise EngineError(
            f"no rule {rule_id!r} is loaded (an organization's rule is ORG_ID/RULE_ID;"
            " `engine status` shows the rules loaded)"
        )
    row = sql.fetch_one(conn, "rule_disable", rule_id, rule[1], who, comment, for_s)
    assert row is not None
    return disable_row(row)


def enable_rule(conn: sql.Connection, rule_id: str) -> bool:
    """Lift a runtime disable; whether there was one."""
    return sql.fetch_one(conn, "rule_enable", rule_id) is not None


def disable_row(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("rule", "org_id", "disabled_by", "comment", "disabled_at", "until")
    return dict(zip(keys, row, strict=True))


def list_disables(conn: sql.Connection) -> list[dict[str, Any]]:
    return [disable_row(r) for r in sql.fetch_all(conn, "rule_disables_list")]


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return "-" if value is None else str(value)


def format_silences(silences: Sequence[dict[str, Any]]) -> list[str]:
    """One line per silence: id, state, what it matches, until when, who and why."""
    lines = []
    for s in silences:
        matchers = " ".join(f"{k}={v}" for k, v in s["matchers"].items())
        scope = "" if s["org_id"] is None else f" org {s['org_id']}"
        state = "active" if s["active"] else "expired"
        lines.append(
            f"  {s['id']}  {state}{scope}  rule {s['rule_glob']}"
            f"{'  ' + matchers if matchers else ''}  until {_when(s['ends_at'])}"
            f"  by {s['created_by']}: {s['comment']}"
        )
    return lines


def format_disables(disables: Sequence[dict[str, Any]]) -> list[str]:
    """One line per disabled rule: id, until when, who and why."""
    return [
        f"  {d['rule']}  until {'enabled' if d['until'] is None else _when(d['until'])}"
        f"  by {d['disabled_by']}{': ' + d['comment'] if d['comment'] else ''}"
        for d in disables
    ]
