"""pyproject pins ``rq`` to the release actions.rq_internals was verified against."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import rq

from actions.rq_internals import VERIFIED_RQ, rq_release

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_the_pin_allows_exactly_the_verified_release() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if re.match(r"rq\b", d)]
    major, minor = VERIFIED_RQ
    assert pin.replace(" ", "") == f"rq>={major}.{minor},<{major}.{minor + 1}"


def test_the_installed_release_is_the_verified_one() -> None:
    assert rq_release() == VERIFIED_RQ, f"rq {rq.__version__} installed"
