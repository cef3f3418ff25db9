"""The operator's tenant commands: ``engine orgs``, ``engine keys``, ``engine secrets-key``.

Wired into the CLI by engine.cli, which reports every EngineError as one line and exit 1.
A created key is printed once, alone on the last line, so ``tail -1`` captures it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.config import Settings

if TYPE_CHECKING:
    from engine.tenants.orgs import OrgStore


# Every command imports what it needs when it runs: `engine --help` and the other
# commands do not pay for psycopg or cryptography.


def _org_store(args: argparse.Namespace) -> tuple[Settings, OrgStore]:
    import sql
    from engine.tenants.orgs import OrgStore

    settings = args.settings_of(args)
    return settings, OrgStore(sql.connect(settings.database_url))


def cmd_orgs_create(args: argparse.Namespace) -> int:
    _, store = _org_store(args)
    with store.conn:
        org_id = store.create_org(args.name)
    print(f"created organization {args.name} (id {org_id})")
    return 0


def cmd_orgs_list(args: argparse.Namespace) -> int:
    from engine.tenants.orgs import format_orgs

    settings, store = _org_store(args)
    with store.conn:
        orgs = store.list_orgs()
    if args.json:
        print(json.dumps([vars(o) for o in orgs], indent=2, default=str))
    else:
        quotas = settings.tenants
        print(
            format_orgs(orgs, max_rules=quotas.max_rules, max_firings=quotas.max_firings_per_minute)
        )
    return 0


def cmd_orgs_set(args: argparse.Namespace) -> int:
    from engine.tenants.orgs import check_org_name, parse_org_settings

    change = parse_org_settings(args.settings)  # before connecting: a typo costs nothing
    _, store = _org_store(args)
    with store.conn:
        store.set_org(check_org_name(args.name), change)
    print(f"updated organization {args.name}: {' '.join(args.settings)}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from engine.tenants.orgs import check_key_label, parse_role

    role = parse_role(args.role)
    check_key_label(args.name)
    _, store = _org_store(args)
    with store.conn:
        key = store.create_key(args.org, role, args.name)
    label = f" {key.name!r}" if key.name else ""
    print(f"created {key.role.value} key {key.id}{label} for organization {key.org_name}")
    print("it is shown only this once (only its hash is kept); the key is the last line:")
    print(key.text)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from engine.tenants.orgs import format_keys

    _, store = _org_store(args)
    with store.conn:
        keys = store.list_keys(args.org)
    if args.json:
        print(json.dumps([vars(k) for k in keys], indent=2, default=str))
    else:
        print(format_keys(keys, args.org))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from engine.tenants.orgs import OrgError

    try:
        key_id = int(args.id)
    except ValueError:
        raise OrgError(
            f"a key id is a number, as engine keys list shows (got {args.id!r})"
        ) from None
    _, store = _org_store(args)
    with store.conn:
        revoked = store.revoke_key(key_id)
    what = f"key {revoked.id} ({revoked.org_name}, {revoked.role}"
    what += f", {revoked.name!r})" if revoked.name else ")"
    if revoked.just_now:
        print(f"revoked {what}: requests with it are refused from now on")
    else:
        print(f"{what} was already revoked at {revoked.revoked_at:%Y-%m-%d %H:%M:%S%z}")
    return 0


def cmd_secrets_key(args: argparse.Namespace) -> int:
    from engine.tenants.secrets_box import new_secrets_key

    print(new_secrets_key())
    return 0


def add_tenant_commands(sub: Any, settings_of: Callable[[argparse.Namespace], Settings]) -> None:
    """``engine orgs``, ``engine keys`` and ``engine secrets-key`` on the CLI's subparsers."""

    def command(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func, settings_of=settings_of)
        return p

    orgs = sub.add_parser("orgs", help="organizations (tenants of `engine api`)")
    orgs.set_defaults(settings_of=settings_of)
    orgs_sub = orgs.add_subparsers(dest="orgs_command", required=True)
    create = orgs_sub.add_parser("create", help="create an organization")
    create.set_defaults(func=cmd_orgs_create)
    create.add_argument("name", help="lower-case letters, digits, '-' and '_'")
    listing = orgs_sub.add_parser("list", help="organizations, their quotas, rules and keys")
    listing.set_defaults(func=cmd_orgs_list)
    listing.add_argument("--json", action="store_true")
    change = orgs_sub.add_parser(
        "set",
        help="change an organization's quotas or private-address access",
        description="Settings: max_rules=N, max_firings_per_minute=N (N or 'default' for "
        "the config's tenants: value), allow_private=true|false (its rules may reach "
        "private addresses).",
    )
    change.set_defaults(func=cmd_orgs_set)
    change.add_argument("name")
    change.add_argument("settings", nargs="*", metavar="key=value")

    keys = sub.add_parser("keys", help="API keys of organizations")
    keys.set_defaults(settings_of=settings_of)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    key_create = keys_sub.add_parser(
        "create", help="make a key; it is printed once, alone on the last line"
    )
    key_create.set_defaults(func=cmd_keys_create)
    key_create.add_argument("--org", required=True, metavar="NAME")
    key_create.add_argument("--role", required=True, help="admin, editor or viewer")
    key_create.add_argument("--name", metavar="LABEL", help="what the key is for")
    key_list = keys_sub.add_parser("list", help="an organization's keys (never the keys)")
    key_list.set_defaults(func=cmd_keys_list)
    key_list.add_argument("--org", required=True, metavar="NAME")
    key_list.add_argument("--json", action="store_true")
    revoke = keys_sub.add_parser("revoke", help="revoke a key: it is refused from now on")
    revoke.set_defaults(func=cmd_keys_revoke)
    revoke.add_argument("id", metavar="ID")
    command("secrets-key", cmd_secrets_key, "print a new value for the config's secrets_key")
