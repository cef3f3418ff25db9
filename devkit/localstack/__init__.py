"""Private PostgreSQL and Redis servers on free ports, for tests, ``engine up`` and benches.

Each server lives in a directory we own, listens on 127.0.0.1 only and is stopped at
interpreter exit if the caller forgot.  This package must never touch a server the machine
happens to run (the system's cluster on 5432, a system redis): it only starts its own
processes, from the binaries it finds, in the directory it is given.

    common     ports, pids, log tails, tracking, the start-and-retry-on-a-fresh-port loop
    postgres   PostgresServer (run as the ``postgres`` user when we are root)
    redis      RedisServer
    leftovers  stop_abandoned: the servers a killed earlier run left behind
"""

from devkit.localstack.common import (
    LOG_TAIL_LINES,
    PORT_ATTEMPTS,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    LocalStackError,
    free_port,
    pid_alive,
    port_is_free,
)
from devkit.localstack.leftovers import stop_abandoned
from devkit.localstack.postgres import (
    FILE_COPY_MIN_VERSION,
    PG_MAX_CONNECTIONS,
    PG_SUPERUSER,
    PG_SYSTEM_USER,
    PostgresServer,
    find_pg_bindir,
)
from devkit.localstack.redis import REDIS_PIDFILE, RedisServer

__all__ = [
    "FILE_COPY_MIN_VERSION",
    "LOG_TAIL_LINES",
    "PG_MAX_CONNECTIONS",
    "PG_SUPERUSER",
    "PG_SYSTEM_USER",
    "PORT_ATTEMPTS",
    "REDIS_PIDFILE",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "LocalStackError",
    "PostgresServer",
    "RedisServer",
    "find_pg_bindir",
    "free_port",
    "pid_alive",
    "port_is_free",
    "stop_abandoned",
]
