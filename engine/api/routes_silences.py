"""``/v1/silences`` and ``/v1/rules/{id}/disable|enable``: a tenant quiets its own rules.

The same rows as `engine silence` and `engine rules disable` write (engine.silences), with
the organization set: row-level security (sql/008) keeps each organization to its own, so
another organization's silence is a 404 like a missing one.  A tenant's silence applies
only to its rules, its glob read against the rule ids it wrote (rules.silence_match).
Changes are recorded as made by the key's name.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from engine.api.db import BEARER, TenantTx, tenant_transaction
from engine.api.errors import ApiError, error_responses, not_found
from engine.api.models import StorableText
from engine.api.routes_rules import ID_REGEX, trigger_id
from engine.silences import (
    MAX_COMMENT_CHARS,
    MAX_GLOB_CHARS,
    check_silence,
    duration_s,
    silence_row,
)
from engine.tenants.keys import Role
from rules.errors import EngineError
from sql import query

router = APIRouter(tags=["silences"], dependencies=[BEARER])
SilenceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a silence's id")]
RuleId = Annotated[str, Path(pattern=ID_REGEX, description="a rule's id")]


class SilenceWanted(BaseModel):
    """The body of POST /v1/silences: which firings, until when, and why."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    rule: StorableText = Field(
        min_length=1, max_length=MAX_GLOB_CHARS, description="rule id glob: `*`, `?`, `[…]`"
    )
    matchers: dict[str, StorableText] = Field(
        default_factory=dict,
        max_length=32,
        description='label or group values that must be equal, e.g. {"agent_id": "42"}',
    )
    for_: str | None = Field(default=None, alias="for", description="e.g. 30m, 2h, 1d")
    until: dt.datetime | None = Field(default=None, description="UTC unless it has an offset")
    comment: StorableText = Field(min_length=1, max_length=MAX_COMMENT_CHARS)


class SilenceInfo(BaseModel):
    id: int
    rule: str
    matchers: dict[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime
    active: bool
    created_by: str
    comment: str
    expired_by: str | None


class SilenceList(BaseModel):
    silences: list[SilenceInfo]


class SilenceExpired(BaseModel):
    id: int
    was_active: bool = Field(description="false: it had already ended")


class DisableWanted(BaseModel):
    """The body of POST /v1/rules/{id}/disable (may be empty)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    for_: str | None = Field(default=None, alias="for", description="enable again after this")
    comment: StorableText | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


class DisabledRule(BaseModel):
    rule: str
    disabled_by: str
    comment: str | None
    disabled_at: dt.datetime
    until: dt.datetime | None = Field(description="null: until enabled")


class DisabledRuleList(BaseModel):
    disabled_rules: list[DisabledRule]


class RuleEnabled(BaseModel):
    rule: str
    was_disabled: bool


async def _who(tx: TenantTx) -> str:
    return f"key:{await tx.conn.fetchval(query('api_key_name'), tx.caller.key_id)}"


def _silence(row: Any) -> dict[str, Any]:
    item = silence_row(tuple(row))
    return {**item, "rule": item["rule_glob"]}


def _disabled(row: Any, org_id: int) -> dict[str, Any]:
    return {**dict(row), "rule": row["trigger_id"].removeprefix(f"{org_id}/")}


@router.post(
    "/v1/silences",
    summary="Silence some of your rules' firings",
    status_code=201,
    response_model=SilenceInfo,
    responses=error_responses(403, 422),
)
async def add_silence(wanted: SilenceWanted, request: Request) -> dict[str, Any]:
    """Firings of your rules whose id matches `rule` and whose labels or group values equal
    every matcher are recorded with status `silenced` and not sent, until `until` or for
    `for`; also those already queued.  Give exactly one of `for` and `until`."""
    try:
        checked = check_silence(
            wanted.rule,
            wanted.matchers,
            wanted.comment,
            for_text=wanted.for_,
            until_text=None if wanted.until is None else wanted.until.isoformat(),
        )
    except EngineError as exc:
        raise ApiError(422, str(exc)) from None
    async with tenant_transaction(request, Role.EDITOR, "add silences") as tx:
        row = await tx.conn.fetchrow(
            query("silence_add"),
            tx.org_id,
            checked.rule_glob,
            json.dumps(checked.matchers),
            await _who(tx),
            checked.until,
            checked.for_s,
            checked.comment,
        )
    return _silence(row)


@router.get(
    "/v1/silences",
    summary="List your silences",
    response_model=SilenceList,
    responses=error_responses(),
)
async def list_silences(
    request: Request,
    include_expired: Annotated[bool, Query(alias="all", description="expired ones too")] = False,
) -> dict[str, Any]:
    async with tenant_transaction(request, Role.VIEWER, "read silences") as tx:
        rows = await tx.conn.fetch(query("silences_list"), include_expired)
    return {"silences": [_silence(r) for r in rows]}


@router.post(
    "/v1/silences/{silence_id}/expire",
    summary="End a silence now",
    response_model=SilenceExpired,
    responses=error_responses(403, 404, 422),
)
async def expire_silence(silence_id: SilenceId, request: Request) -> dict[str, Any]:
    """The silence stops holding firings back (it stays listed with `all=true`)."""
    async with tenant_transaction(request, Role.EDITOR, "expire silences") as tx:
        row = await tx.conn.fetchrow(query("silence_expire"), silence_id, await _who(tx))
    if row is None:
        raise not_found(f"silence {silence_id}")
    return {"id": row["id"], "was_active": row["was_active"]}


@router.post(
    "/v1/rules/{rule_id}/disable",
    summary="Stop evaluating a rule",
    response_model=DisabledRule,
    responses=error_responses(403, 404, 422),
)
async def disable_rule(
    rule_id: RuleId, request: Request, wanted: DisableWanted | None = None
) -> dict[str, Any]:
    """The rule is not evaluated (no state change, no firing) until enabled, or until
    `for` passes; a change of the rule keeps it disabled."""
    wanted = wanted or DisableWanted()
    try:
        for_s = None if wanted.for_ is None else duration_s(wanted.for_, "for")
    except EngineError as exc:
        raise ApiError(422, str(exc)) from None
    async with tenant_transaction(request, Role.EDITOR, "disable rules") as tx:
        engine_id = trigger_id(tx.org_id, rule_id)
        if await tx.conn.fetchrow(query("rule_of_id"), engine_id) is None:
            raise not_found(f"rule {rule_id!r}")
        row = await tx.conn.fetchrow(
            query("rule_disable"), engine_id, tx.org_id, await _who(tx), wanted.comment, for_s
        )
    return _disabled(row, tx.org_id)


@router.post(
    "/v1/rules/{rule_id}/enable",
    summary="Evaluate a disabled rule again",
    response_model=RuleEnabled,
    responses=error_responses(403, 404, 422),
)
async def enable_rule(rule_id: RuleId, request: Request) -> dict[str, Any]:
    async with tenant_transaction(request, Role.EDITOR, "enable rules") as tx:
        engine_id = trigger_id(tx.org_id, rule_id)
        gone = await tx.conn.fetchval(query("rule_enable"), engine_id)
        if gone is None and await tx.conn.fetchrow(query("rule_of_id"), engine_id) is None:
            raise not_found(f"rule {rule_id!r}")
    return {"rule": rule_id, "was_disabled": gone is not None}


@router.get(
    "/v1/disabled-rules",
    summary="List your rules disabled at runtime",
    response_model=DisabledRuleList,
    responses=error_responses(),
)
async def list_disabled_rules(request: Request) -> dict[str, Any]:
    async with tenant_transaction(request, Role.VIEWER, "read disabled rules") as tx:
        rows = await tx.conn.fetch(query("rule_disables_list"))
    return {"disabled_rules": [_disabled(r, tx.org_id) for r in rows]}
