"""`engine api`: organizations' rules, results, events and keys over HTTP (FastAPI).

It works as the database role ``engine_tenant``, one organization per transaction, so
row-level security, not this package's code, keeps organizations apart.  It never
evaluates events and never touches Redis.
"""
