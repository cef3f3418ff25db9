"""RQ's own floor: a no-op job and an in-process SimpleWorker to run it.

``python -m devkit.bench.noop REDIS_URL QUEUE`` runs one SimpleWorker until SIGTERM.
"""

from __future__ import annotations

import sys

import redis
from rq import Queue, SimpleWorker


def noop() -> None:
    """The job: nothing."""


def main() -> None:
    connection = redis.Redis.from_url(sys.argv[1])
    worker = SimpleWorker([Queue(sys.argv[2], connection=connection)], connection=connection)
    worker.work(burst=False, with_scheduler=False, logging_level="WARNING")


if __name__ == "__main__":
    main()
