"""Cold start of the rule set: load and compile N bench rules from files, then index them.

A profiling script, not a test: ``python -m devkit.bench.cold_start 100000 [--profile]``
prints the seconds each step took (``--profile``: the top of cProfile's report).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from devkit.bench.data import RULES_PER_FILE, rule_set_yaml
from rules import RuleIndex, load_rules


def main(argv: list[str]) -> None:
    count = int(argv[0]) if argv else 100_000
    with tempfile.TemporaryDirectory() as directory:
        for start in range(0, count, RULES_PER_FILE):
            text = rule_set_yaml(min(RULES_PER_FILE, count - start), "http://127.0.0.1:9/h", start)
            Path(directory, f"rules-{start:07d}.yaml").write_text(text, encoding="utf-8")
        profile = cProfile.Profile() if "--profile" in argv else None
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        loaded = load_rules([directory], environ={})
        compiled = time.perf_counter()
        index = RuleIndex(loaded.rules)
        indexed = time.perf_counter()
        if profile is not None:
            profile.disable()
    print(
        f"{len(index)} rules, {len(loaded.errors)} errors: load+compile "
        f"{compiled - started:.1f}s, index {indexed - compiled:.1f}s, "
        f"total {indexed - started:.1f}s"
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main(sys.argv[1:])
