"""``/v1/events``: the indexed events, public chain data that every organization reads.

Newest first in the cursor's order ((txid, seq), the order rules see them in), with an
opaque ``before`` position for the next page.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from engine.api.db import BEARER, tenant_transaction
from engine.api.errors import error_responses
from engine.api.models import EventPage
from engine.tenants.keys import Role
from sql import query

router = APIRouter(prefix="/v1/events", tags=["events"], dependencies=[BEARER])
BIGINT = {"ge": -(2**63), "le": 2**63 - 1}
POSITION = re.compile(r"^(?P<txid>[0-9]{1,20})\.(?P<seq>[0-9]{1,18})$")
NAME = r"^[A-Za-z0-9_]{1,100}$"


@router.get(
    "",
    summary="List indexed events",
    response_model=EventPage,
    responses=error_responses(422),
)
async def list_events(
    request: Request,
    chain_id: Annotated[int | None, Query(**BIGINT)] = None,
    agent_id: Annotated[int | None, Query(**BIGINT)] = None,
    registry: Annotated[str | None, Query(pattern=NAME)] = None,
    event_type: Annotated[str | None, Query(pattern=NAME)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[
        str | None,
        Query(pattern=POSITION.pattern, description="the `next` of the previous page"),
    ] = None,
) -> dict[str, Any]:
    """Events, newest first, filtered by chain, agent, registry and type."""
    txid, seq = None, None
    if before is not None:
        match = POSITION.match(before)
        assert match is not None  # the pattern was checked
        txid, seq = match["txid"], int(match["seq"])
        if int(txid) >= 2**64:
            txid, seq = str(2**64 - 1), 2**63 - 1
    async with tenant_transaction(request, Role.VIEWER, "read events") as tx:
        rows = await tx.conn.fetch(
            query("api_events_page"), chain_id, agent_id, registry, event_type, txid, seq, limit
        )
    events = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
    last = rows[-1] if len(rows) == limit else None
    return {"events": events, "next": None if last is None else f"{last['_txid']}.{last['_seq']}"}
