"""``engine bench``: each figure beside the raw baseline measured in the same run.

docs/performance.md says what each figure means.  Modules: ``data`` (events and rule
sets), ``stack`` (servers), ``evaluation`` (figures 1 and 6), ``live`` (figures 2, 3 and
the doorbell), ``throughput`` (figure 4), ``memory`` (figure 5), ``tenants``
(organizations' rules through ``engine api``: ``tenant_setup``, ``tenant_fairness``),
``report`` (printing).  Medians of repeated runs where a run is short.
``engine bench --only SECTION`` runs some sections alone.
"""

from __future__ import annotations

from devkit.bench.runner import BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench"]
