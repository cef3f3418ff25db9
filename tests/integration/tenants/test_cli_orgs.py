"""The operator's CLI for organizations and keys, run as the real ``engine`` process."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from engine.tenants.keys import key_lookup, key_matches
from engine.tenants.secrets_box import SecretsBox
from tests.processes import query_all, query_value, run_engine, write_config


@pytest.fixture
def config(tmp_path: Path, database_url: str, redis_url: str) -> Path:
    return write_config(tmp_path, database_url=database_url, redis_url=redis_url, rules=[])


def _ok(config: Path, *args: str) -> str:
    done = run_engine(config, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _fails(config: Path, *args: str) -> str:
    done = run_engine(config, *args)
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    return done.stderr


def test_an_operator_creates_and_lists_organizations(config: Path, database_url: str) -> None:
    assert "created organization acme" in _ok(config, "orgs", "create", "acme")
    assert "already exists" in _fails(config, "orgs", "create", "acme")
    error = _fails(config, "orgs", "create", "Acme Labs")
    assert "'Acme Labs' is not allowed" in error and "lower-case" in error
    with psycopg.connect(database_url, autocommit=True) as conn:
        org = conn.execute("SELECT id FROM organizations WHERE name = 'acme'").fetchone()[0]
        conn.execute(
            "INSERT INTO triggers (id, org_id, rule_id, document, content_hash, logic_hash)"
            " VALUES (%s, %s, 'r', '{}', 'c', 'l')",
            (f"{org}/r", org),
        )
    listing = _ok(config, "orgs", "list").splitlines()
    assert listing[0].split() == [
        "name",
        "id",
        "max_rules",
        "max_firings_per_minute",
        "allow_private",
        "rules",
        "keys",
    ]
    quotas = ["1000", "(default)", "600", "(default)"]
    assert listing[1].split() == ["acme", str(org), *quotas, "false", "1", "0"]
    assert query_value(database_url, "SELECT count(*) FROM organizations") == 1


def test_orgs_set_changes_what_it_names_and_refuses_anything_else(
    config: Path, database_url: str
) -> None:
    _ok(config, "orgs", "create", "acme")
    _ok(config, "orgs", "set", "acme", "max_rules=5", "allow_private=true")
    _ok(config, "orgs", "set", "acme", "max_firings_per_minute=0")
    row = "SELECT max_rules, max_firings_per_minute, allow_private FROM organizations"
    assert query_all(database_url, row) == [(5, 0, True)]
    for bad, says in (
        (["colour=red"], "unknown setting 'colour'"),
        (["max_rules=-1"], "max_rules must be a whole number"),
        (["max_rules=lots"], "max_rules must be a whole number"),
        (["allow_private=yes"], "allow_private must be true or false"),
        (["max_rules"], "key=value"),
        ([], "name at least one setting"),
    ):
        assert says in _fails(config, "orgs", "set", "acme", *bad), bad
    assert "no organization named 'globex'" in _fails(
        config, "orgs", "set", "globex", "max_rules=1"
    )
    assert query_all(database_url, row) == [(5, 0, True)]
    _ok(config, "orgs", "set", "acme", "max_rules=default")
    assert query_all(database_url, row) == [(None, 0, True)]
    assert "5 (default)" not in _ok(config, "orgs", "list")


def test_a_key_is_printed_once_on_the_last_line_and_only_its_hash_is_kept(
    config: Path, database_url: str
) -> None:
    _ok(config, "orgs", "create", "acme")
    out = _ok(config, "keys", "create", "--org", "acme", "--role", "editor", "--name", "ci")
    key = out.splitlines()[-1]
    assert key_lookup(key) is not None, out
    assert "editor key" in out and "'ci'" in out
    stored = query_all(database_url, "SELECT * FROM api_keys")
    assert len(stored) == 1
    assert key not in repr(stored) and key.split("_")[-1] not in repr(stored)
    digest = query_value(database_url, "SELECT hash FROM api_keys")
    assert bytes(digest) == hashlib.sha256(key.encode()).digest()
    # The API's authentication finds it by its lookup.
    auth = query_all(
        database_url, "SELECT role, hash, revoked FROM engine_authenticate($1)", key_lookup(key)
    )
    assert auth[0][0] == "editor" and key_matches(key, auth[0][1]) and auth[0][2] is False

    listing = _ok(config, "keys", "list", "--org", "acme")
    assert key not in listing
    key_id = query_value(database_url, "SELECT id FROM api_keys")
    assert listing.splitlines()[1].split()[:3] == [str(key_id), "editor", "ci"]
    assert listing.splitlines()[1].split()[-2:] == ["-", "-"]  # never used, not revoked
    assert "no organization named 'globex'" in _fails(config, "keys", "list", "--org", "globex")


def test_keys_create_refuses_an_unknown_organization_or_role(
    config: Path, database_url: str
) -> None:
    _ok(config, "orgs", "create", "acme")
    assert "no organization named 'globex'" in _fails(
        config, "keys", "create", "--org", "globex", "--role", "admin"
    )
    assert "--role must be one of viewer, editor, admin" in _fails(
        config, "keys", "create", "--org", "acme", "--role", "root"
    )
    assert query_value(database_url, "SELECT count(*) FROM api_keys") == 0


def test_a_revoked_key_is_refused_and_listed_as_revoked(config: Path, database_url: str) -> None:
    _ok(config, "orgs", "create", "acme")
    key = _ok(config, "keys", "create", "--org", "acme", "--role", "admin").splitlines()[-1]
    key_id = query_value(database_url, "SELECT id FROM api_keys")
    assert "revoked key" in _ok(config, "keys", "revoke", str(key_id))
    assert "already revoked" in _ok(config, "keys", "revoke", str(key_id))
    revoked = query_all(
        database_url, "SELECT revoked FROM engine_authenticate($1)", key_lookup(key)
    )
    assert revoked == [(True,)]
    row = _ok(config, "keys", "list", "--org", "acme").splitlines()[1]
    assert row.split()[0] == str(key_id) and row.rstrip().endswith(tuple("0123456789"))
    assert "no API key with id 999" in _fails(config, "keys", "revoke", "999")
    assert "a key id is a number" in _fails(config, "keys", "revoke", "abc")


def test_secrets_key_prints_a_key_the_secrets_box_takes(config: Path) -> None:
    key = _ok(config, "secrets-key").strip()
    box = SecretsBox(key)
    assert box.open(box.seal("hunter2!", "1/X"), "1/X") == "hunter2!"
    assert _ok(config, "secrets-key").strip() != key
