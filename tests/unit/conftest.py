"""The unit tier uses no services: asking for PostgreSQL or Redis fails the test at once.

A test that needs a real server belongs in tests/integration, where tests/conftest.py
starts them.
"""

from __future__ import annotations

import pytest


def _no_service(what: str) -> None:
    pytest.fail(f"unit tests use no services ({what}): move this test to tests/integration")


@pytest.fixture(scope="session")
def pg_server() -> None:
    _no_service("PostgreSQL")


@pytest.fixture(scope="session")
def redis_server() -> None:
    _no_service("Redis")
