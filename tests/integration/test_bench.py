"""`engine bench --quick` runs (its own servers) and prints every figure beside its baseline.

Not a timed test: the figures are printed, never compared to a target here.  A baseline
that could not be measured prints ``n/a``, which fails the pattern below.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

FIGURES = [
    "1-eval-1000",
    "1-eval-3000",
    "6-shared-key",
    "7-confirmations-deep",
    "7-confirmations-held",
    "doorbell-ingest",
    "doorbell-commit-p99",
    "2-live-single-100-p50",
    "2-live-single-100-p99",
    "2-live-single-1000-p50",
    "2-live-single-1000-p99",
    "2-live-copy-1000-p50",
    "2-live-copy-1000-p99",
    "2-live-copy-1000-write-floor",
    "2-live-copy-mix-1000-p50",
    "2-live-copy-mix-1000-p99",
    "3-e2e-100-p50",
    "3-e2e-100-p99",
    "doorbell-poll-p50",
    "doorbell-poll-p99",
    "4-actions",
    "5-memory",
    "t-api-write-p50",
    "t-api-write-p99",
    "t-cold-start",
    "t-change-to-live-p99",
    "t-pause-max",
    "t-fairness-p99",
    "t-fairness-behind-flood",
    "d1-digest-messages",
    "d2-digest-eval",
    "7-absence-pause",
]
NUMBER = r"-?[\d,]+(?:\.\d+)?"


def test_quick_bench_prints_every_figure_beside_its_baseline() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "--log-level", "WARNING", "bench", "--quick"],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for key in FIGURES:
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(f"[{key}] ")), None)
        assert line is not None, f"figure {key} missing:\n{proc.stdout}"
        pattern = rf": {NUMBER} \S+ \| baseline [^:]+: {NUMBER} \S+ \| ratio {NUMBER}"
        assert re.search(pattern, line), line
    assert "bench finished" in proc.stdout
