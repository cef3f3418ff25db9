"""A real `engine api` process for the API tests, and organizations and keys made as the
operator's CLI makes them (plain SQL plus engine.tenants.keys).

One API process and one database per test module (starting the process costs a second);
each test makes organizations of its own, so tests do not see each other's rows.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.localstack import PostgresServer, free_port
from engine.tenants.keys import new_key
from tests.processes import EngineProcess, query_all, query_value, wait_until, write_config

_names = itertools.count()


@dataclass
class Org:
    id: int
    name: str
    keys: dict[str, str]  # role -> key text

    @property
    def admin(self) -> str:
        return self.keys["admin"]

    @property
    def editor(self) -> str:
        return self.keys["editor"]

    @property
    def viewer(self) -> str:
        return self.keys["viewer"]


@dataclass
class Api:
    url: str
    dsn: str
    process: EngineProcess

    def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        *,
        json: Any = None,
        body: str | bytes | None = None,
        content_type: str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if content_type is not None:
            sent["Content-Type"] = content_type
        return httpx.request(
            method,
            self.url + path,
            json=json,
            content=body,
            params=params,
            headers=sent,
            timeout=10,
        )

    def org(self, *, max_rules: int | None = None) -> Org:
        """A new organization with one key of each role."""
        name = f"org-{next(_names)}-{uuid.uuid4().hex[:6]}"
        org_id = query_value(
            self.dsn,
            "INSERT INTO organizations (name, max_rules) VALUES ($1, $2) RETURNING id",
            name,
            max_rules,
        )
        keys = {role: self.key(org_id, role) for role in ("admin", "editor", "viewer")}
        return Org(org_id, name, keys)

    def key(self, org_id: int, role: str, *, revoked: bool = False) -> str:
        key = new_key()
        query_all(
            self.dsn,
            "INSERT INTO api_keys (org_id, role, name, lookup, hash, revoked_at)"
            " VALUES ($1, $2, 'test', $3, $4, CASE WHEN $5 THEN now() END) RETURNING id",
            org_id,
            role,
            key.lookup,
            key.digest,
            revoked,
        )
        return key.text


def start_api(
    directory: Path,
    dsn: str,
    extra: Mapping[str, Any] | None = None,
    top_level: Mapping[str, Any] | None = None,
) -> Api:
    """``extra``: more of the config's ``api:`` section; ``top_level``: other config keys."""
    port = free_port()
    config = write_config(
        directory,
        database_url=dsn,
        redis_url="redis://127.0.0.1:1/0",  # the API never touches Redis
        rules=[],
        extra={**(top_level or {}), "api": {"listen": f"127.0.0.1:{port}", **(extra or {})}},
    )
    process = EngineProcess(config, "api", log_path=directory / "api.log").start()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not process.alive():
            raise AssertionError(f"engine api exited:\n{process.output()}")
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=30, what="engine api to answer /healthz")
    return Api(url=url, dsn=dsn, process=process)


@pytest.fixture(scope="module")
def api(
    pg_server: PostgresServer, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """A real `engine api` on a migrated database of this module's own, as the superuser."""
    name = f"api_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name, template=template_database)
    running = start_api(tmp_path_factory.mktemp("api"), dsn)
    try:
        yield running
    finally:
        running.process.stop()
        pg_server.drop_database(name)
