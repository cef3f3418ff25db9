"""The separate process that writes events for the live figures.

``python -m devkit.bench.inserter DSN OUT --rate R --seconds S [--batch B] [--writers W]``
writes a JSON list of ``[event_ids, commit_time, commit_seconds]`` to OUT, one per
statement, where commit_time is the wall clock right after the commit returned.
``--batch 1`` inserts single rows; more uses COPY.  ``--rate 0`` writes as fast as it
can (the doorbell-cost figure, with ``--writers`` concurrent connections).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg

from devkit.bench.data import COLUMNS, EventGenerator

LIVE = {"registry": "reputation", "event_type": "NewFeedback", "tag1": "bench-live", "score": 50}
INSERT_EVENT = (
    "INSERT INTO events ("
    + ", ".join(f'"{c}"' for c in COLUMNS)
    + ") VALUES ("
    + ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
    + ")"
)


async def _writer(
    dsn: str,
    gen: EventGenerator,
    rate: float,
    batch: int,
    deadline: float,
    log: list[list[Any]],
    start: float,
    stride: int,
    offset: int,
    fire_every: int = 1,
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(INSERT_EVENT)
        k = offset
        while True:
            if rate > 0:
                due = start + k * batch / rate
                now = time.time()
                if due > now:
                    await asyncio.sleep(due - now)
            if time.time() >= deadline:
                return
            rows = [
                gen.row(**LIVE) if (k * batch + j) % fire_every == 0 else gen.row()
                for j in range(batch)
            ]
            t0 = time.time()
            if batch == 1:
                await statement.fetch(*rows[0])
            else:
                await conn.copy_records_to_table("events", records=rows, columns=list(COLUMNS))
            t1 = time.time()
            log.append([[row[0] for row in rows], t1, t1 - t0])
            k += stride
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> list[list[Any]]:
    log: list[list[Any]] = []
    start = time.time() + 0.2
    deadline = start + args.seconds
    tag = uuid.uuid4().hex[:6]
    gens = [EventGenerator(seed=i, prefix=f"L{tag}{i}-") for i in range(args.writers)]
    await asyncio.gather(
        *(
            _writer(
                args.dsn,
                gens[i],
                args.rate,
                args.batch,
                deadline,
                log,
                start,
                args.writers,
                i,
                args.fire_every,
            )
            for i in range(args.writers)
        )
    )
    return log


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("out")
    parser.add_argument("--rate", type=float, default=100.0, help="rows/s; 0: unlimited")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument(
        "--fire-every", type=int, default=1, help="every Nth row fires; the others are a mix"
    )
    args = parser.parse_args()
    log = asyncio.run(run(args))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(log, fh)


if __name__ == "__main__":
    main()
