"""The operator's store of organizations and their API keys (``engine orgs``, ``engine keys``).

The CLI connects as the tables' owner, whom row-level security does not restrict: this
module is the operator's view of every organization.  It never prints nor stores a key
in clear: ``create_key`` hands the new key back once, and only its hash is kept.
Errors name what is wrong (an unknown organization, a name already taken, a setting
that does not exist) and what would be accepted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sql
from engine.tenants.keys import Role, new_key
from rules.errors import EngineError

# The CHECK of organizations.name (sql/004), said before the database refuses it.
ORG_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_KEY_LABEL_CHARS = 200
# organizations' INTEGER columns: a larger value would be refused by PostgreSQL.
MAX_QUOTA = 2**31 - 1
ORG_SETTINGS = ("max_rules", "max_firings_per_minute", "allow_private")


class OrgError(EngineError):
    """A request about organizations or keys that cannot be done as asked."""


@dataclass(frozen=True)
class Organization:
    """One row of ``engine orgs list``; a quota of None is the config default."""

    id: int
    name: str
    max_rules: int | None
    max_firings_per_minute: int | None
    allow_private: bool
    created_at: datetime
    rule_count: int
    key_count: int  # keys not revoked


@dataclass(frozen=True)
class ApiKeyInfo:
    """One row of ``engine keys list``: everything about a key but the key."""

    id: int
    role: str
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedKey:
    id: int
    org_name: str
    role: Role
    name: str | None
    text: str  # the key itself: shown once, never stored


@dataclass(frozen=True)
class RevokedKey:
    id: int
    org_name: str
    role: str
    name: str | None
    revoked_at: datetime
    just_now: bool  # False: it had been revoked before


@dataclass(frozen=True)
class OrgSettingsChange:
    """What ``engine orgs set`` changes; ``..._given`` with a None value: the default."""

    max_rules_given: bool = False
    max_rules: int | None = None
    max_firings_given: bool = False
    max_firings_per_minute: int | None = None
    allow_private: bool | None = None


def check_org_name(name: str) -> str:
    if not ORG_NAME.match(name):
        raise OrgError(
            f"organization name {name!r} is not allowed: use 1 to 63 lower-case letters,"
            " digits, '-' or '_', starting with a letter or a digit (e.g. acme-labs)"
        )
    return name


def _quota(key: str, value: str) -> int | None:
    if value == "default":
        return None
    if not re.fullmatch(r"[0-9]+", value) or int(value) > MAX_QUOTA:
        raise OrgError(
            f"{key} must be a whole number from 0 to {MAX_QUOTA}, or 'default' for the"
            f" config's tenants.{key} (got {value!r})"
        )
    return int(value)


def parse_org_settings(assignments: Sequence[str]) -> OrgSettingsChange:
    """``key=value`` words of ``engine orgs set`` as a change; an OrgError names a bad one."""
    if not assignments:
        raise OrgError(f"name at least one setting to change: {', '.join(ORG_SETTINGS)}")
    found: dict[str, str] = {}
    for word in assignments:
        key, sep, value = word.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise OrgError(f"settings are written key=value (got {word!r})")
        if key not in ORG_SETTINGS:
            raise OrgError(f"unknown setting {key!r}: the settings are {', '.join(ORG_SETTINGS)}")
        if key in found:
            raise OrgError(f"{key} is given twice")
        found[key] = value
    allow_private: bool | None = None
    if "allow_private" in found:
        text = found["allow_private"].lower()
        if text not in ("true", "false"):
            raise OrgError(f"allow_private must be true or false (got {found['allow_private']!r})")
        allow_private = text == "true"
    return OrgSettingsChange(
        max_rules_given="max_rules" in found,
        max_rules=_quota("max_rules", found["max_rules"]) if "max_rules" in found else None,
        max_firings_given="max_firings_per_minute" in found,
        max_firings_per_minute=(
            _quota("max_firings_per_minute", found["max_firings_per_minute"])
            if "max_firings_per_minute" in found
            else None
        ),
        allow_private=allow_private,
    )


def check_key_label(label: str | None) -> str | None:
    if label is None:
        return None
    if not label.strip() or len(label) > MAX_KEY_LABEL_CHARS or not label.isprintable():
        raise OrgError(
            f"a key's --name must be 1 to {MAX_KEY_LABEL_CHARS} printable characters"
            f" (got {label[:40]!r})"
        )
    return label


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise OrgError(f"--role must be one of {roles} (got {text!r})") from None


class OrgStore:
    """Organizations and keys on one connection of the tables' owner."""

    def __init__(self, conn: sql.Connection) -> None:
        self.conn = conn

    def org_id(self, name: str) -> int:
        row = sql.fetch_one(self.conn, "org_id_by_name", name)
        if row is None:
            raise OrgError(f"no organization named {name!r} (engine orgs list shows them)")
        return int(row[0])

    def create_org(self, name: str) -> int:
        check_org_name(name)
        row = sql.fetch_one(self.conn, "org_create", name)
        if row is None:
            raise OrgError(f"an organization named {name!r} already exists")
        return int(row[0])

    def list_orgs(self) -> list[Organization]:
        return [Organization(*row) for row in sql.fetch_all(self.conn, "org_list")]

    def set_org(self, name: str, change: OrgSettingsChange) -> None:
        row = sql.fetch_one(
            self.conn,
            "org_set",
            name,
            change.max_rules_given,
            change.max_rules,
            change.max_firings_given,
            change.max_firings_per_minute,
            change.allow_private,
        )
        if row is None:
            raise OrgError(f"no organization named {name!r} (engine orgs list shows them)")

    def create_key(self, org_name: str, role: Role, label: str | None) -> CreatedKey:
        org_id = self.org_id(org_name)
        key = new_key()
        row = sql.fetch_one(
            self.conn,
            "key_create",
            org_id,
            role.value,
            check_key_label(label),
            key.lookup,
            key.digest,
        )
        assert row is not None  # INSERT … RETURNING
        return CreatedKey(id=int(row[0]), org_name=org_name, role=role, name=label, text=key.text)

    def list_keys(self, org_name: str) -> list[ApiKeyInfo]:
        org_id = self.org_id(org_name)
        return [ApiKeyInfo(*row) for row in sql.fetch_all(self.conn, "key_list", org_id)]

    def revoke_key(self, key_id: int) -> RevokedKey:
        row = sql.fetch_one(self.conn, "key_revoke", key_id)
        if row is None:
            raise OrgError(f"no API key with id {key_id} (engine keys list --org NAME shows them)")
        return RevokedKey(*row)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S%z")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    )


def format_orgs(orgs: Sequence[Organization], *, max_rules: int, max_firings: int) -> str:
    """The organizations as a table; a quota left to the config is marked ``(default)``."""
    if not orgs:
        return "no organizations (engine orgs create NAME makes one)"

    def quota(value: int | None, default: int) -> str:
        return f"{default} (default)" if value is None else str(value)

    rows = [
        (
            o.name,
            str(o.id),
            quota(o.max_rules, max_rules),
            quota(o.max_firings_per_minute, max_firings),
            "true" if o.allow_private else "false",
            str(o.rule_count),
            str(o.key_count),
        )
        for o in orgs
    ]
    header = ("name", "id", "max_rules", "max_firings_per_minute", "allow_private", "rules", "keys")
    return _table(header, rows)


def format_keys(keys: Sequence[ApiKeyInfo], org_name: str) -> str:
    if not keys:
        return f"no keys for {org_name} (engine keys create --org {org_name} --role ROLE)"
    rows = [
        (
            str(k.id),
            k.role,
            k.name or "-",
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
        for k in keys
    ]
    return _table(("id", "role", "name", "created", "last used", "revoked"), rows)
