"""Schemathesis drives a real `engine api` from its own OpenAPI document: valid and invalid
requests to every endpoint, with a real admin key, answer no 5xx and nothing the document
does not list (status code, content type, body schema).  The API has a secrets_key, so
the secrets endpoints store, not only refuse."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devkit.localstack import PostgresServer
from engine.tenants.keys import new_key
from engine.tenants.secrets_box import new_secrets_key
from tests.integration.tenants.api_fixtures import Api, start_api
from tests.processes import query_all

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_MODE = 150
TIME_BOUND_S = 60


@pytest.fixture(scope="module")
def api(
    pg_server: PostgresServer, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    name = f"api_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name, template=template_database)
    running = start_api(
        tmp_path_factory.mktemp("api"), dsn, top_level={"secrets_key": new_secrets_key()}
    )
    try:
        yield running
    finally:
        running.process.stop()
        pg_server.drop_database(name)


def _fuzz_key(api: Api) -> str:
    """An admin key whose id no generated small id reaches, so the fuzzer cannot revoke
    the key it works with."""
    org = api.org()
    key = new_key()
    query_all(
        api.dsn,
        "INSERT INTO api_keys (id, org_id, role, lookup, hash) OVERRIDING SYSTEM VALUE"
        " VALUES ($1, $2, 'admin', $3, $4) RETURNING id",
        2**62,
        org.id,
        key.lookup,
        key.digest,
    )
    return key.text


def test_the_api_answers_only_what_its_openapi_document_lists(api: Api) -> None:
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {_fuzz_key(api)}"}
    started = time.monotonic()
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

        @given(case=schema.as_strategy(generation_mode=mode, headers=headers))
        @settings(
            max_examples=EXAMPLES_PER_MODE,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=api.url, checks=CHECKS, timeout=10)

        fuzz()
    assert time.monotonic() - started < TIME_BOUND_S
