"""Tools for trying and measuring the engine, not part of the daemon.

``engine up`` (the private local stack: PostgreSQL, Redis, a webhook receiver and a
Telegram stand-in), its demo events, and ``engine bench``.  Nothing in ``engine``,
``actions`` or ``rules`` imports this package, except the CLI commands that start these
tools; the tests use its local stack to start their own servers.
"""
