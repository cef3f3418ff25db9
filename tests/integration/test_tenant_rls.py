"""Row-level security as `engine api` works: the engine_tenant role with one organization
set for the transaction sees and changes only that organization's rows, whatever SQL runs."""

from __future__ import annotations

import psycopg
import pytest

TENANT_TABLES = (
    "triggers",
    "trigger_state",
    "action_results",
    "rule_stats",
    "trigger_changes",
    "secrets",
    "agent_tokens",
    "api_keys",
)


def _seed(conn: psycopg.Connection) -> tuple[int, int]:
    """Two organizations with a row in every tenant table each, and one file rule of the
    operator's."""
    ids = []
    for name in ("acme", "globex"):
        org = conn.execute(
            "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (name,)
        ).fetchone()[0]
        ids.append(org)
        trigger = f"{org}/low-feedback"
        conn.execute(
            "INSERT INTO triggers (id, org_id, rule_id, document, content_hash, logic_hash)"
            " VALUES (%s, %s, 'low-feedback', '{}', 'c', 'l')",
            (trigger, org),
        )
        conn.execute(
            "INSERT INTO trigger_state (trigger_id, group_key, state, org_id)"
            " VALUES (%s, '', '{}', %s)",
            (trigger, org),
        )
        conn.execute(
            "INSERT INTO action_results (trigger_id, action_index, action_type, spec,"
            " context, org_id) VALUES (%s, 0, 'rest', '{}', '{}', %s)",
            (trigger, org),
        )
        conn.execute(
            "INSERT INTO secrets (org_id, name, ciphertext) VALUES (%s, 'TOKEN', '\\x00')",
            (org,),
        )
        conn.execute(
            "INSERT INTO rule_stats (trigger_id, hour, org_id) VALUES (%s, now(), %s)",
            (trigger, org),
        )
        conn.execute(
            "INSERT INTO agent_tokens (org_id, chain_id, agent_id, ciphertext)"
            " VALUES (%s, 8453, 42, '\\x00')",
            (org,),
        )
        conn.execute(
            "INSERT INTO api_keys (org_id, role, lookup, hash) VALUES (%s, 'admin', %s, '\\x00')",
            (org, f"lookup-{name}"),
        )
    conn.execute(
        "INSERT INTO triggers (id, document, content_hash, logic_hash)"
        " VALUES ('operator-rule', '{}', 'c', 'l')"
    )
    return ids[0], ids[1]


def _as_tenant(conn: psycopg.Connection, org_id: int | None) -> None:
    conn.execute("SET LOCAL ROLE engine_tenant")
    if org_id is not None:
        conn.execute("SELECT set_config('engine.org_id', %s, true)", (str(org_id),))


def test_a_tenant_reads_only_its_own_rows(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        acme, _ = _seed(conn)
    with psycopg.connect(database_url) as conn:
        _as_tenant(conn, acme)
        for table in TENANT_TABLES:
            orgs = {row[0] for row in conn.execute(f"SELECT org_id FROM {table}")}
            assert orgs == {acme}, table
        ids = {row[0] for row in conn.execute("SELECT id FROM triggers")}
        assert ids == {f"{acme}/low-feedback"}  # neither globex's nor the operator's


def test_without_an_organization_a_tenant_sees_nothing(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _seed(conn)
    with psycopg.connect(database_url) as conn:
        _as_tenant(conn, None)
        for table in TENANT_TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


def test_a_tenant_cannot_change_another_organizations_rows(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        acme, globex = _seed(conn)
    with psycopg.connect(database_url) as conn:
        _as_tenant(conn, acme)
        assert conn.execute("DELETE FROM triggers WHERE org_id = %s", (globex,)).rowcount == 0
        assert conn.execute("UPDATE secrets SET ciphertext = '\\x01'").rowcount == 1  # its own
        assert conn.execute("DELETE FROM action_results WHERE org_id IS NULL").rowcount == 0
        conn.commit()
    with psycopg.connect(database_url) as conn:
        _as_tenant(conn, acme)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO triggers (id, org_id, rule_id, document, content_hash, logic_hash)"
                " VALUES ('x', %s, 'x', '{}', 'c', 'l')",
                (globex,),
            )
    with psycopg.connect(database_url) as conn:
        _as_tenant(conn, acme)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE organizations SET allow_private = true")
    with psycopg.connect(database_url, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT count(*) FILTER (WHERE org_id = %s), count(*) FROM triggers", (globex,)
        ).fetchone()
        assert counts == (1, 3)


def test_the_tenant_role_cannot_lift_its_policies(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _seed(conn)
    with psycopg.connect(database_url) as conn:
        _as_tenant(conn, None)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE triggers DISABLE ROW LEVEL SECURITY")


def test_every_change_of_a_rule_is_recorded_in_its_transaction(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        acme, _ = _seed(conn)
        conn.execute("UPDATE triggers SET enabled = false WHERE id = %s", (f"{acme}/low-feedback",))
        conn.execute("DELETE FROM triggers WHERE id = 'operator-rule'")
        version = conn.execute(
            "SELECT version FROM triggers WHERE id = %s", (f"{acme}/low-feedback",)
        ).fetchone()[0]
        changes = conn.execute("SELECT trigger_id, op FROM trigger_changes ORDER BY seq").fetchall()
    assert version == 2
    assert changes[-2:] == [(f"{acme}/low-feedback", "upsert"), ("operator-rule", "delete")]
    assert ("operator-rule", "upsert") in changes
