"""Events the indexer rewrites or deletes after the engine evaluated them (chain reorgs).

Two jobs, both inside the transaction of a batch (engine.evaluator), so each happens
exactly once with the cursor advance it belongs to:

- ``drop_rewritten``: a row of the batch whose id was evaluated before (a second row of
  the id, or a re-insert after the evaluated row was deleted) is not evaluated again:
  no state changes, nothing fires.  It is recorded in ``event_reorgs`` as a 'rewrite'.
  One indexed query per batch over the batch's ids decides it.
- ``process_removals``: the deletes and in-place updates the trigger of
  sql/007_reorgs.sql recorded.  An update of an evaluated row is a 'rewrite'; a delete
  of an evaluated row (with no other evaluated row of its id left) is a 'retraction':
  for each firing it caused, the firing rule's ``on_retract`` actions are queued once,
  rendered from the firing's stored context plus ``retracted_at``.  Removals of rows
  the cursor never passed change nothing: those rows were never evaluated.

This module never commits and never talks to Redis; it does not undo state (see
docs/chains.md for what is and is not corrected).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from engine.action_rows import ActionRowWriter, PendingActionRows
from engine.cursor import CursorPosition
from engine.json_text import to_json
from rules import RuleIndex
from sql import query

log = logging.getLogger(__name__)

#: Removals taken per batch at most: a reorg of many blocks is worked off over several.
REMOVALS_PER_BATCH = 1000


@dataclass
class RemovalsResult:
    """What one batch concluded from the removals it took."""

    rewrites: int = 0
    retractions: int = 0
    action_ids: list[int] = field(default_factory=list)  # on_retract rows to enqueue
    action_orgs: dict[int, int] = field(default_factory=dict)
    chains: set[int] = field(default_factory=set)  # chains of the removed rows


@dataclass
class _Retraction:
    event_id: str
    chain_id: int | None
    block_number: int | None
    block_hash: str | None
    retracted_at: str
    queued: int = 0


async def drop_rewritten(
    conn: asyncpg.Connection,
    rows: Sequence[asyncpg.Record],
    events: list[dict[str, Any]],
    passed: Sequence[CursorPosition],
) -> tuple[list[asyncpg.Record], list[dict[str, Any]], int]:
    """The batch without the rows whose id was evaluated before or earlier in the batch;
    those are recorded as rewrites.  Returns (rows, events, rewrites).

    ``passed``, per row: the position, before the batch, of the cursor evaluating it (the
    main cursor, or a chain cursor of engine.confirmations): what it had passed of the
    row's chain was evaluated.
    """
    ids = [event.get("id") for event in events]
    # Only a row with an earlier row of its id, or a retracted id, can be a rewrite: the
    # read told (`_earlier`); a row read without it is checked.
    suspects = [i for i, row in enumerate(rows) if row.get("_earlier") is not False]
    seen: set[Any] = set()
    if suspects:
        found = await conn.fetch(
            query("reorg_evaluated_ids"),
            [ids[i] for i in suspects],
            [passed[i].txid for i in suspects],
            [passed[i].seq for i in suspects],
        )
        seen = {r[0] for r in found}
    if not seen and len(set(ids)) == len(ids):
        return list(rows), events, 0
    kept_rows: list[asyncpg.Record] = []
    kept_events: list[dict[str, Any]] = []
    txids: list[str] = []
    seqs: list[int] = []
    for row, event in zip(rows, events, strict=True):
        event_id = event.get("id")
        if event_id in seen:
            txids.append(row["_txid"])
            seqs.append(row["_seq"])
            log.warning(
                "event written again after it was evaluated; not evaluated again",
                extra={"event_id": event_id},
            )
            continue
        seen.add(event_id)  # a second row of it later in this batch is a rewrite too
        kept_rows.append(row)
        kept_events.append(event)
    await conn.execute(query("reorg_record_rewritten_rows"), txids, seqs)
    return kept_rows, kept_events, len(txids)


async def process_removals(
    conn: asyncpg.Connection, index: RuleIndex, start: CursorPosition, cursor_name: str
) -> RemovalsResult:
    """Take the recorded removals and act on them (see the module docstring).  ``start``:
    the main cursor's position, named ``cursor_name``; a chain holding rows for
    confirmations is judged by its own cursor (engine.confirmations)."""
    result = RemovalsResult()
    removals = await conn.fetch(
        query("reorg_take_removals"), start.txid, start.seq, REMOVALS_PER_BATCH, cursor_name
    )
    if not removals:
        return result
    result.chains = {r["chain_id"] for r in removals if r["chain_id"] is not None}
    records: list[tuple[Any, ...]] = []
    retractions: dict[str, _Retraction] = {}
    for r in removals:
        if not r["evaluated"]:
            continue  # never evaluated: the cursor reads what is there when it gets there
        if r["op"] == "update":
            records.append(
                (
                    r["event_id"],
                    "rewrite",
                    r["chain_id"],
                    r["block_number"],
                    r["block_hash"],
                    r["new_block_hash"],
                    0,
                )
            )
            log.warning(
                "event rewritten in place after it was evaluated; not evaluated again",
                extra={"event_id": r["event_id"]},
            )
        elif not r["still_there"] and r["event_id"] not in retractions:
            retractions[r["event_id"]] = _Retraction(
                event_id=r["event_id"],
                chain_id=r["chain_id"],
                block_number=r["block_number"],
                block_hash=r["block_hash"],
                retracted_at=r["at"].isoformat(timespec="milliseconds"),
            )
    if retractions:
        await _queue_on_retract(conn, index, retractions, result)
    for gone in retractions.values():
        records.append(
            (
                gone.event_id,
                "retraction",
                gone.chain_id,
                gone.block_number,
                gone.block_hash,
                None,
                gone.queued,
            )
        )
        log.warning(
            "evaluated event removed from the chain",
            extra={"event_id": gone.event_id, "on_retract_queued": gone.queued},
        )
    if records:
        await conn.execute(query("reorg_record"), *map(list, zip(*records, strict=True)))
    result.rewrites = sum(1 for r in records if r[1] == "rewrite")
    result.retractions = len(retractions)
    return result


async def _queue_on_retract(
    conn: asyncpg.Connection,
    index: RuleIndex,
    retractions: dict[str, _Retraction],
    result: RemovalsResult,
) -> None:
    """Queue each retracting rule's on_retract actions once per firing of a retracted
    event; the unique key of action_results makes a second try write nothing."""
    rule_ids = [rule.id for rule in index.rules if rule.on_retract]
    if not rule_ids:
        return
    firings = await conn.fetch(query("reorg_firings"), rule_ids, list(retractions))
    pending = PendingActionRows()
    for firing in firings:
        rule = index.get(firing["trigger_id"])
        gone = retractions[firing["event_id"]]
        if rule is None:
            continue
        context = json.loads(firing["context"])
        context["retracted_at"] = gone.retracted_at
        context_json = to_json(context)
        for action in rule.on_retract:
            pending.add(rule, action, gone.event_id, context_json)
        gone.queued += len(rule.on_retract)
    if not len(pending):
        return
    writer = ActionRowWriter(conn, copy=False, most=len(pending))
    result.action_ids = await writer.finish(pending)
    result.action_orgs = writer.orgs
