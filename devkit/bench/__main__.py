"""``python -m devkit.bench [--quick] [--only SECTION …]``: some sections of ``engine bench``
alone, on the bench's own servers (what developing one figure needs; ``engine bench``
runs them all)."""

from __future__ import annotations

import argparse

from devkit.bench.runner import SECTIONS, BenchOptions, run_bench


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", action="append", choices=SECTIONS, default=[])
    parser.add_argument("--workers", type=int, default=2, help="engine worker processes")
    args = parser.parse_args()
    return run_bench(BenchOptions(quick=args.quick, workers=args.workers, only=tuple(args.only)))


if __name__ == "__main__":
    raise SystemExit(main())
