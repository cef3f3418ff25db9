"""``/v1/rules``: a tenant's rules, written in the rule language and compiled as files are.

A rule is stored in ``triggers`` as ``'<org_id>/<rule_id>'`` with its organization; the
table's trigger bumps ``version`` and records the change in ``trigger_changes`` in the
same transaction, which is how the daemon learns of it.  A change of the rule's logic
(on, where, per, when) deletes its state in that transaction too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request, Response

from engine.api.db import BEARER, TenantTx, settings_of, tenant_transaction
from engine.api.errors import ApiError, error_responses, not_found
from engine.api.models import RulePage, RuleWritten, StoredRule
from engine.api.rule_bodies import compile_tenant_rule
from engine.tenants.keys import Role
from rules.compile import ID_PATTERN
from rules.model import Rule
from sql import query

router = APIRouter(prefix="/v1/rules", tags=["rules"], dependencies=[BEARER])
ID_REGEX = ID_PATTERN.pattern

_RULE_BODY = {
    "requestBody": {
        "required": True,
        "description": "One rule, as one item of a rule file's `rules:` (`id` optional). "
        "YAML may also be a rule file with exactly one rule; its mistakes carry lines.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def trigger_id(org_id: int, rule_id: str) -> str:
    """The engine-wide id of a tenant's rule (rule ids cannot contain '/')."""
    return f"{org_id}/{rule_id}"


def stored(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["rule_id"],
        "version": row["version"],
        "rule": json.loads(row["document"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def max_rules_default(request: Request) -> int:
    """Config ``tenants.max_rules``: the quota of an organization whose own is NULL."""
    return settings_of(request).tenants.max_rules


async def _check_quota(tx: TenantTx, default: int) -> None:
    await tx.conn.execute(query("api_lock_org_rules"), tx.org_id)
    org = await tx.conn.fetchrow(query("api_organization"), tx.org_id)
    limit = default if org is None or org["max_rules"] is None else org["max_rules"]
    count = await tx.conn.fetchval(query("api_count_rules"), tx.org_id)
    if count >= limit:
        name = org["name"] if org is not None else str(tx.org_id)
        raise ApiError(
            409,
            f"organization {name!r} has reached its quota of {limit} rules (max_rules): "
            "delete a rule first, or ask the operator to raise it "
            f"(engine orgs set {name} max_rules=…)",
        )


@dataclass(frozen=True)
class WrittenRule:
    row: asyncpg.Record
    state: str  # new | kept | reset
    created: bool
    changed: bool

    def answer(self) -> dict[str, Any]:
        """The RuleWritten body."""
        return {
            **stored(self.row),
            "created": self.created,
            "changed": self.changed,
            "state": self.state,
        }


async def write_rule(tx: TenantTx, rule: Rule, default_max: int) -> WrittenRule:
    """Insert or replace ``rule``; a rule equal to the stored one is left as it is."""
    tid = trigger_id(tx.org_id, rule.id)
    known = await tx.conn.fetchrow(query("api_rule_hashes"), tid)
    if known is None:
        await _check_quota(tx, default_max)
        row = await tx.conn.fetchrow(
            query("api_rule_insert"),
            tid,
            tx.org_id,
            rule.id,
            rule.owner,
            rule.description,
            rule.enabled,
            rule.document_json,
            rule.content_hash,
            rule.logic_hash,
        )
        return WrittenRule(row, "new", created=True, changed=True)
    if known["content_hash"] == rule.content_hash:
        row = await tx.conn.fetchrow(query("api_rule_get"), tid)
        return WrittenRule(row, "kept", created=False, changed=False)
    state = "kept"
    if known["logic_hash"] != rule.logic_hash:
        await tx.conn.execute(query("api_rule_reset_state"), tid)
        state = "reset"
    row = await tx.conn.fetchrow(
        query("api_rule_update"),
        tid,
        rule.owner,
        rule.description,
        rule.enabled,
        rule.document_json,
        rule.content_hash,
        rule.logic_hash,
    )
    return WrittenRule(row, state, created=False, changed=True)


async def remove_rule(tx: TenantTx, rule_id: str) -> bool:
    """Delete the rule and its state; whether it existed."""
    tid = trigger_id(tx.org_id, rule_id)
    gone = await tx.conn.fetchval(query("api_rule_delete"), tid)
    if gone is not None:
        await tx.conn.execute(query("api_rule_reset_state"), tid)
    return gone is not None


async def stored_rule(tx: TenantTx, rule_id: str) -> asyncpg.Record | None:
    """The stored row of ``rule_id`` (None when the organization has no such rule)."""
    if not ID_PATTERN.match(rule_id):
        return None
    row: asyncpg.Record | None = await tx.conn.fetchrow(
        query("api_rule_get"), trigger_id(tx.org_id, rule_id)
    )
    return row


@router.put(
    "/{rule_id}",
    summary="Create or replace a rule",
    status_code=200,
    response_model=RuleWritten,
    responses={
        201: {"model": RuleWritten, "description": "The rule was created"},
        **error_responses(403, 409, 415, 422),
    },
    openapi_extra=_RULE_BODY,
)
async def put_rule(rule_id: str, request: Request, response: Response) -> dict[str, Any]:
    """Create or replace the rule `rule_id` from a JSON or YAML body.

    A rule that does not compile answers 422 with the messages `engine check` prints,
    each with its path in the rule and (YAML) its line.  Creating a rule beyond the
    organization's `max_rules` answers 409.  The rule is evaluated for every event
    committed after this answer.
    """
    async with tenant_transaction(request, Role.EDITOR, "change rules") as tx:
        body = await request.body()
        rule = compile_tenant_rule(
            body,
            request.headers.get("content-type"),
            rule_id,
            timeout_limits_s=settings_of(request).action_timeout_limits_s,
        )
        written = await write_rule(tx, rule, max_rules_default(request))
    response.status_code = 201 if written.created else 200
    return written.answer()


@router.get(
    "",
    summary="List rules",
    response_model=RulePage,
    responses=error_responses(422),
)
async def list_rules(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(pattern=ID_REGEX, description="a rule id")] = None,
) -> dict[str, Any]:
    """The organization's rules in rule id order, `limit` at a time after `after`."""
    async with tenant_transaction(request, Role.VIEWER, "read rules") as tx:
        rows = await tx.conn.fetch(query("api_rules_page"), tx.org_id, after, limit)
    rules = [stored(row) for row in rows]
    return {"rules": rules, "next": rules[-1]["id"] if len(rules) == limit else None}


@router.get(
    "/{rule_id}",
    summary="Read a rule",
    response_model=StoredRule,
    responses=error_responses(404),
)
async def get_rule(rule_id: str, request: Request) -> dict[str, Any]:
    async with tenant_transaction(request, Role.VIEWER, "read rules") as tx:
        row = await stored_rule(tx, rule_id)
    if row is None:
        raise not_found(f"rule {rule_id!r}")
    return stored(row)


@router.delete(
    "/{rule_id}",
    summary="Delete a rule",
    status_code=204,
    response_class=Response,
    responses=error_responses(403, 404),
)
async def delete_rule(rule_id: str, request: Request) -> Response:
    """Delete the rule and its state; it stops for every event committed after this answer."""
    async with tenant_transaction(request, Role.EDITOR, "change rules") as tx:
        gone = ID_PATTERN.match(rule_id) is not None and await remove_rule(tx, rule_id)
    if not gone:
        raise not_found(f"rule {rule_id!r}")
    return Response(status_code=204)
