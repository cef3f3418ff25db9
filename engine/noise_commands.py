"""The operator's commands for quiet: ``engine silence add|list|expire`` and
``engine rules disable|enable``.

Wired into the CLI by engine.cli, which reports every EngineError as one line and exit 1.
``engine silence add`` prints the new silence's id alone on its last line (``tail -1``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from engine.config import Settings

SettingsOf = Callable[[argparse.Namespace], Settings]


def _connect(args: argparse.Namespace) -> Any:
    import sql

    return sql.connect(args.settings_of(args).database_url)


def cmd_silence_add(args: argparse.Namespace) -> int:
    from engine.silences import add_silence, check_silence, format_silences, os_user

    request = check_silence(
        args.rule, args.match, args.comment, for_text=args.for_, until_text=args.until
    )
    with _connect(args) as conn:
        silence = add_silence(conn, request, os_user())
    print("silence added; `engine silence expire ID` ends it early")
    print("\n".join(format_silences([silence])))
    print(silence["id"])
    return 0


def cmd_silence_list(args: argparse.Namespace) -> int:
    from engine.silences import format_silences, list_silences

    with _connect(args) as conn:
        silences = list_silences(conn, include_expired=args.all)
    if args.json:
        print(json.dumps(silences, indent=2, default=str))
    elif not silences:
        print("no active silences" if not args.all else "no silences")
    else:
        print("\n".join(format_silences(silences)))
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    from engine.silences import expire_silence, os_user

    with _connect(args) as conn:
        was_active = expire_silence(conn, args.id, os_user())
    print(f"silence {args.id} expired" if was_active else f"silence {args.id} had already ended")
    return 0


def cmd_rules_disable(args: argparse.Namespace) -> int:
    from engine.silences import disable_rule, duration_s, format_disables, os_user

    for_s = None if args.for_ is None else duration_s(args.for_, "--for")
    with _connect(args) as conn:
        disable = disable_rule(conn, args.rule_id, for_s, os_user(), args.comment)
    print("rule disabled (not evaluated; `engine rules enable` undoes it):")
    print("\n".join(format_disables([disable])))
    return 0


def cmd_rules_enable(args: argparse.Namespace) -> int:
    from engine.silences import enable_rule

    with _connect(args) as conn:
        was = enable_rule(conn, args.rule_id)
    print(f"rule {args.rule_id} enabled" if was else f"rule {args.rule_id} was not disabled")
    return 0


def add_noise_commands(sub: Any, rules_sub: Any, settings_of: SettingsOf) -> None:
    """``engine silence …`` under ``sub``; ``disable`` / ``enable`` under ``engine rules``."""
    silence = sub.add_parser("silence", help="silences: hold back a rule's notifications")
    silence_sub = silence.add_subparsers(dest="silence_command", required=True)
    add = silence_sub.add_parser(
        "add",
        help="hold back the firings of the rules matching GLOB (and --match) for a while",
        description="Firings the silence matches are still evaluated and recorded (status"
        " silenced) but never sent, also those already queued.  Prints the id last.",
    )
    add.set_defaults(func=cmd_silence_add, settings_of=settings_of)
    add.add_argument("--rule", required=True, metavar="GLOB", help="rule id glob, e.g. 'agent-*'")
    add.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label or group value that must be equal (repeatable), e.g. agent_id=42",
    )
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="for_", metavar="DURATION", help="e.g. 30m, 2h, 1d")
    until.add_argument("--until", metavar="TIME", help="ISO 8601, UTC unless an offset is given")
    add.add_argument("--comment", required=True, help="why, and who is on it")
    listing = silence_sub.add_parser("list", help="the active silences (--all: expired too)")
    listing.set_defaults(func=cmd_silence_list, settings_of=settings_of)
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--json", action="store_true")
    expire = silence_sub.add_parser("expire", help="end a silence now")
    expire.set_defaults(func=cmd_silence_expire, settings_of=settings_of)
    expire.add_argument("id", type=int, metavar="ID")

    disable = rules_sub.add_parser(
        "disable",
        help="stop evaluating a rule (persisted; survives restarts and file reloads)",
        description="The rule is not evaluated (no state change, no firing) until `engine"
        " rules enable ID` or --for passes.  Firings queued before still go out.",
    )
    disable.set_defaults(func=cmd_rules_disable, settings_of=settings_of)
    disable.add_argument("rule_id", metavar="ID", help="a rule id (an organization's: ORG_ID/ID)")
    disable.add_argument("--for", dest="for_", metavar="DURATION", help="enable again after this")
    disable.add_argument("--comment", help="why")
    enable = rules_sub.add_parser("enable", help="evaluate a rule disabled at runtime again")
    enable.set_defaults(func=cmd_rules_enable, settings_of=settings_of)
    enable.add_argument("rule_id", metavar="ID")
