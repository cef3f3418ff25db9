"""The demo organization of ``engine up``: what a newcomer needs to try the tenant flow.

Under ``.engine/``, beside the generated config: the local stack's ``secrets_key``, the
``demo`` organization's editor key (both made once and reused, so the key printed in the
banner stays valid across runs), and a directory of rules the organization pushes with
``engine rules push``.  These files hold credentials of a throwaway local stack; they are
written readable by their owner only all the same.  This module must never touch a
database other than the one ``engine up`` started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

import sql
from engine.tenants.keys import Role, key_lookup
from engine.tenants.orgs import OrgSettingsChange, OrgStore
from engine.tenants.secrets_box import new_secrets_key

DEMO_ORG = "demo"
DEMO_KEY_LABEL = "engine up"
SECRETS_KEY_FILE = "secrets_key"
DEMO_KEY_FILE = "demo-key.json"
TENANT_RULES_DIR = "tenant-rules"
TENANT_RULES_FILE = "low-feedback.yaml"
# The organization's rules name their Telegram bot by this secret: organizations never
# borrow the operator's bots, so the flow starts by storing it.
BOT_TOKEN_SECRET = "BOT_TOKEN"
DEFAULT_CHAT_ID = 42


@dataclass(frozen=True)
class DemoKey:
    """The demo organization's editor key, and its row in ``api_keys``."""

    id: int
    text: str


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def local_secrets_key(home: Path) -> str:
    """The stack's ``secrets_key``: made on the first start, then the same on every start
    (a new one would leave the secrets stored before unreadable)."""
    path = home / SECRETS_KEY_FILE
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if kept:
        return kept
    key = new_secrets_key()
    _write_private(path, key + "\n")
    return key


def _kept_key(path: Path) -> DemoKey | None:
    try:
        data = json.loads(path.read_text())
        kept = DemoKey(id=int(data["id"]), text=str(data["key"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return kept if key_lookup(kept.text) is not None else None


def demo_org_key(database_url: str, home: Path) -> DemoKey:
    """Create (once) the ``demo`` organization, allowed to reach private addresses so its
    rules can post to the local receiver, and hand back its editor key: the one kept in
    ``.engine/`` while the database still has it unrevoked, else a new one."""
    path = home / DEMO_KEY_FILE
    with sql.connect(database_url) as conn:
        store = OrgStore(conn)
        with conn.transaction():
            if sql.fetch_one(conn, "org_id_by_name", DEMO_ORG) is None:
                store.create_org(DEMO_ORG)
            store.set_org(DEMO_ORG, OrgSettingsChange(allow_private=True))
            kept = _kept_key(path)
            usable = {k.id for k in store.list_keys(DEMO_ORG) if k.revoked_at is None}
            if kept is not None and kept.id in usable:
                return kept
            created = store.create_key(DEMO_ORG, Role.EDITOR, DEMO_KEY_LABEL)
    key = DemoKey(id=created.id, text=created.text)
    _write_private(path, json.dumps({"id": key.id, "key": key.text}) + "\n")
    return key


def write_tenant_rules(home: Path, *, webhook_url: str, chat_id: str | None) -> Path:
    """The demo organization's rule directory, written on every start because the
    receiver's URL is in it (an organization's rule never reads the environment)."""
    directory = home / TENANT_RULES_DIR
    directory.mkdir(exist_ok=True)
    chat: int | str = chat_id or DEFAULT_CHAT_ID
    rule = {
        "id": "low-feedback",
        "description": "The demo organization's own rule: a score under 30 for agent 42",
        "on": {"registry": "reputation", "event_type": "NewFeedback"},
        "where": {"agent_id": 42, "score": {"lt": 30}},
        "actions": [
            {
                "rest": {
                    "url": f"{webhook_url.rstrip('/')}/demo-org",
                    "body": {
                        "organization": DEMO_ORG,
                        "agent": "{{ event.agent_id }}",
                        "score": "{{ event.score }}",
                    },
                }
            },
            {
                "telegram": {
                    "bot_token": {"secret": BOT_TOKEN_SECRET},
                    "chat_id": chat,
                    "text": "demo organization: score <b>{{ event.score }}</b>"
                    " for agent {{ event.agent_id }}",
                }
            },
        ],
    }
    header = (
        "# Written by `engine up` on every start: the demo organization's rules, for\n"
        "# `engine rules push` (the banner shows the command).  Copy the directory to\n"
        "# keep changes of your own.\n"
    )
    text = header + yaml.safe_dump(
        {"rules": [rule]}, sort_keys=False, allow_unicode=True, width=100
    )
    (directory / TENANT_RULES_FILE).write_text(text)
    return directory


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def tenant_flow_text(
    *, engine: str, emit: str, api_url: str, key: DemoKey, rules_dir: Path, bot_token: str
) -> str:
    """The banner's tenant flow, command by command; ``emit`` is the banner's command that
    emits a demo event, ``bot_token`` the value stored as the organization's bot token."""
    auth = f'-H "Authorization: Bearer {key.text}"'
    value = json.dumps({"value": bot_token})
    flow = [
        (
            f"store the secret {BOT_TOKEN_SECRET} the organization's Telegram rule names",
            f"curl -s -X PUT {api_url}/v1/secrets/{BOT_TOKEN_SECRET} {auth}"
            f" -H 'content-type: application/json' -d {_shell_quote(value)}",
        ),
        (
            "push the organization's rules (the plan is printed)",
            f"{engine} rules push {rules_dir} --api {api_url} --key {key.text}",
        ),
        ("emit an event its rule and the example rules fire on", emit),
        ("list the organization's audit rows", f"curl -s {api_url}/v1/actions {auth}"),
    ]
    intro = (
        f"The tenant flow, as the organization {DEMO_ORG} (key {key.id}, editor; docs/tenants.md):"
    )
    return "\n".join([intro, *(f"  # {what}\n  {command}" for what, command in flow)])
