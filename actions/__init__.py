"""The executors run by RQ workers: job entry, telegram, rest, mcp, network guard, audit.

``actions`` receives what it needs (settings, a DSN) from ``engine``; it never reads
config files itself.
"""
