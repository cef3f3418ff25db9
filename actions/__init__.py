"""The executors run by RQ workers: the job entry, telegram, rest, mcp, the network guard,
and the claim/lease state machine of action rows (``claims``).

Everything that depends on RQ's key layout is in ``rq_internals``. ``actions`` receives
what it needs (settings, a DSN) from ``engine``; it never imports ``engine`` and never
reads config files itself.
"""
