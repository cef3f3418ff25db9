"""The ``engine`` command line.

Every error a user can cause ends as one readable message (with its cause chain) and
exit status 1 — never a traceback.  This is the only module that configures logging.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine import logs
from engine.config import Settings, load_config
from engine.noise_commands import add_noise_commands
from engine.tenants.commands import add_tenant_commands
from rules.errors import EngineError

if TYPE_CHECKING:
    from engine.migrate import MigrationReport

Command = Callable[[argparse.Namespace], int]


def _config_path(args: argparse.Namespace) -> str | None:
    if args.config:
        return str(args.config)
    env = os.environ.get("ENGINE_CONFIG")
    if env:
        return env
    return "config.yaml" if Path("config.yaml").exists() else None


def settings_of(args: argparse.Namespace) -> Settings:
    return load_config(_config_path(args))


def cmd_migrate(args: argparse.Namespace) -> int:
    from engine.migrate import detach_source, migrate

    settings = settings_of(args)
    if args.detach:
        removed = detach_source(settings.database_url)
        print(f"removed: {', '.join(removed)}" if removed else "no source triggers were attached")
        return 0
    if args.backfill and settings.source_tables is None:
        raise EngineError("--backfill copies the rows of source.table: the config has no source:")
    report = migrate(
        settings.database_url,
        doorbell=not args.no_doorbell,
        source=settings.source_tables,
        backfill=args.backfill,
    )
    applied = ", ".join(report.applied) or "nothing new"
    kind = "TimescaleDB hypertable" if report.timescaledb else "plain table"
    bell = "on" if report.doorbell else "off (the engine polls)"
    print(f"migrations applied: {applied}; events: {kind}; NOTIFY doorbell: {bell}")
    _print_source(report)
    return 0


def _print_source(report: MigrationReport) -> None:
    attached = report.source
    if attached is None:
        if report.source_left:
            print(
                "source triggers attached earlier, left as they are: "
                f"{', '.join(report.source_left)} (the config has no source:; "
                "`engine migrate --detach` removes them)"
            )
        return
    if attached.removed:
        print(f"source triggers replaced: {', '.join(attached.removed)}")
    print(f"source triggers attached: {', '.join(attached.attached)}")
    for line in attached.fields:
        print(f"  {line}")
    if attached.checkpoints_copied:
        print(f"checkpoints copied from the source: {attached.checkpoints_copied}")
    if attached.events_backfilled:
        print(f"events copied from the source (--backfill): {attached.events_backfilled}")
    for warning in attached.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.daemon import Daemon

    settings = settings_of(args)

    async def main() -> None:
        daemon = Daemon(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, daemon.stopping.set)
        await daemon.run()

    asyncio.run(main())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.worker import run_worker

    return run_worker(settings_of(args), burst=args.burst)


def cmd_api(args: argparse.Namespace) -> int:
    from engine.api.app import serve

    return serve(settings_of(args))


def cmd_up(args: argparse.Namespace) -> int:
    from devkit.up import run_up

    return run_up(root=Path.cwd(), config_path=args.config, demo=args.demo)


def cmd_check(args: argparse.Namespace) -> int:
    from rules import load_rules

    settings = settings_of(args)
    result = load_rules(list(settings.rules), **settings.rule_loading())
    for error in result.errors:
        print(error, file=sys.stderr)
    if result.errors:
        print(f"{len(result.errors)} error(s) in {len(result.files)} file(s)", file=sys.stderr)
        return 1
    print(f"config OK; {len(result.rules)} rule(s) in {len(result.files)} file(s) OK")
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
    import sql
    from engine.emit import build_event, insert_event, parse_assignments

    event = build_event(args.registry, args.event_type, parse_assignments(args.fields))
    with sql.connect(settings_of(args).database_url) as conn:
        event_id = insert_event(conn, event)
    print(f"inserted event {event_id} ({args.registry} {args.event_type})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from engine.status import collect_status, format_status

    status = collect_status(settings_of(args))
    print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))
    return 0


def cmd_actions_failed(args: argparse.Namespace) -> int:
    from engine.deadletters import format_failed, list_failed

    rows = list_failed(settings_of(args), rule=args.rule, kind=args.type, within=args.since)
    print(json.dumps(rows, indent=2, default=str) if args.json else format_failed(rows))
    return 0


def cmd_actions_retry(args: argparse.Namespace) -> int:
    from engine.deadletters import retry_failed

    if not args.ids and not args.all_failed:
        raise EngineError("name the action ids to retry, or pass --all-failed")
    ids = retry_failed(settings_of(args), [int(i) for i in args.ids], all_failed=args.all_failed)
    print(f"re-queued {len(ids)} action(s): {', '.join(map(str, ids)) or '-'}")
    return 0


def cmd_rules_schema(args: argparse.Namespace) -> int:
    from rules import rule_file_schema

    print(json.dumps(rule_file_schema(), indent=2))
    return 0


def cmd_rules_test(args: argparse.Namespace) -> int:
    from rules import format_rule_test_report, load_rules, run_rule_tests

    settings = settings_of(args)  # rules_env applies to the files given too
    # Files given alone may name bots of another deployment's config.
    paths = list(args.files) if args.files else list(settings.rules)
    loaded = load_rules(paths, **settings.rule_loading(check_bots=not args.files))
    for error in loaded.errors:
        print(error, file=sys.stderr)
    if loaded.errors:
        return 1
    results = run_rule_tests(loaded.rules)
    print(format_rule_test_report(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_rules_backtest(args: argparse.Namespace) -> int:
    from engine.backtest import run_backtest

    return run_backtest(settings_of(args), args)


def cmd_rules_explain(args: argparse.Namespace) -> int:
    from engine.explain_report import run_explain

    return run_explain(settings_of(args), args)


def cmd_rules_push(args: argparse.Namespace) -> int:
    from engine.rules_push import push_rules

    key = args.key or os.environ.get("ENGINE_API_KEY")
    if not key:
        raise EngineError("pass the organization's API key: --key KEY, or $ENGINE_API_KEY")
    push_rules(args.directory, url=args.api, key=key, dry_run=args.dry_run, prune=args.prune)
    return 0


def cmd_rules_reset_state(args: argparse.Namespace) -> int:
    from engine.state_reset import parse_group, reset_state

    group = parse_group(args.group)
    report = reset_state(settings_of(args).database_url, args.rule_id, group)
    print("\n".join(report.lines()))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from devkit.bench import BenchOptions, run_bench
    from devkit.bench.runner import SECTIONS

    unknown = [name for name in args.only if name not in SECTIONS]
    if unknown:
        print(
            f"error: --only {unknown[0]!r} is not a section of the bench"
            f" (one of: {', '.join(SECTIONS)})",
            file=sys.stderr,
        )
        return 1
    return run_bench(
        BenchOptions(
            rules=args.rules,
            events=args.events,
            rate=args.rate,
            workers=args.workers,
            quick=args.quick,
            database_url=args.database_url,
            redis_url=args.redis_url,
            only=tuple(args.only),
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, help="config file (default: $ENGINE_CONFIG or ./config.yaml)"
    )
    parser.add_argument("--log-level", default=os.environ.get("ENGINE_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    migrate = add(
        "migrate", cmd_migrate, "apply the sql/ migrations and attach source: (idempotent)"
    )
    migrate.add_argument(
        "--no-doorbell", action="store_true", help="no NOTIFY trigger: the engine polls"
    )
    migrate.add_argument(
        "--detach",
        action="store_true",
        help="only remove the triggers attached for source: (prints what it removed)",
    )
    migrate.add_argument(
        "--backfill",
        action="store_true",
        help="also copy the rows already in source.table that are not in events yet",
    )
    add("run", cmd_run, "the daemon: listener, evaluator, dispatcher, http endpoints")
    add("worker", cmd_worker, "an RQ worker executing actions").add_argument(
        "--burst", action="store_true", help="drain the queue, then exit"
    )
    add("api", cmd_api, "the tenants' HTTP API on api.listen (its own process, any number)")
    add("up", cmd_up, "a local stack for trying it out").add_argument(
        "--demo", action="store_true", help="also emit a stream of demo events"
    )
    add("check", cmd_check, "validate the config and every rule file")
    emit = add("emit", cmd_emit, "insert one event (key=value fields)")
    emit.add_argument("registry")
    emit.add_argument("event_type")
    emit.add_argument("fields", nargs="*", metavar="key=value")
    add("status", cmd_status, "cursor lag, events/s, actions by status").add_argument(
        "--json", action="store_true"
    )

    actions = sub.add_parser("actions", help="dead letters: list and replay")
    actions_sub = actions.add_subparsers(dest="actions_command", required=True)
    failed = actions_sub.add_parser("failed", help="list failed actions (dead letters)")
    failed.set_defaults(func=cmd_actions_failed)
    failed.add_argument("--rule")
    failed.add_argument("--type", choices=["rest", "telegram", "mcp"])
    failed.add_argument("--since", default="30d", help="age limit, e.g. 2h, 7d (default 30d)")
    failed.add_argument("--json", action="store_true")
    retry = actions_sub.add_parser("retry", help="replay failed actions")
    retry.set_defaults(func=cmd_actions_retry)
    retry.add_argument("ids", nargs="*")
    retry.add_argument("--all-failed", action="store_true")

    rules = sub.add_parser("rules", help="test, backtest and describe rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    rules_sub.add_parser("schema", help="print the JSON Schema of rule files").set_defaults(
        func=cmd_rules_schema
    )
    test = rules_sub.add_parser("test", help="run the tests: blocks of rule files")
    test.set_defaults(func=cmd_rules_test)
    test.add_argument("files", nargs="*")
    backtest = rules_sub.add_parser("backtest", help="evaluate rules over stored events")
    backtest.set_defaults(func=cmd_rules_backtest)
    backtest.add_argument("file")
    backtest.add_argument("--since", default="7d")
    backtest.add_argument("--until")
    backtest.add_argument("--rule")
    backtest.add_argument(
        "--explain", action="store_true", help="also each event's verdicts, step by step"
    )
    explain = rules_sub.add_parser(
        "explain",
        help="why each rule did (not) fire on a stored event",
        description="For every rule whose `on` matches the stored event (or the one --rule "
        "names): whether the engine evaluated it, the action rows it produced, and each "
        "step's verdict with the values it saw, from the group's current state. Read-only.",
    )
    explain.set_defaults(func=cmd_rules_explain)
    explain.add_argument("event_id", metavar="EVENT_ID")
    explain.add_argument("--rule", metavar="ID", help="only this rule (also when `on` differs)")
    explain.add_argument("--json", action="store_true", help="the explanation as JSON")
    push = rules_sub.add_parser(
        "push",
        help="make an organization's rules (through the API) equal to a directory of rule files",
        description="Compile every rule file of DIR as the API does, list the organization's "
        "rules, print the plan (create / update / delete / unchanged) and apply it.",
    )
    push.set_defaults(func=cmd_rules_push)
    push.add_argument("directory", metavar="DIR")
    push.add_argument("--api", required=True, metavar="URL", help="e.g. http://127.0.0.1:8080")
    push.add_argument("--key", help="an editor key of the organization (default: $ENGINE_API_KEY)")
    push.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    push.add_argument(
        "--prune", action="store_true", help="also delete the organization's rules not in DIR"
    )
    reset = rules_sub.add_parser(
        "reset-state",
        help="forget a rule's stored state (all groups, or those matching --group)",
        description="Delete a rule's stored state (windows, throttle, remembered values) so "
        "it starts afresh; safe while `engine run` runs (it applies between two batches).",
    )
    reset.set_defaults(func=cmd_rules_reset_state)
    reset.add_argument("rule_id", metavar="ID")
    reset.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="only the group with this per value (repeat for several per fields)",
    )
    add_tenant_commands(sub, settings_of)
    add_noise_commands(sub, rules_sub, settings_of)
    bench = add("bench", cmd_bench, "measure the engine beside PostgreSQL's and RQ's own limits")
    bench.add_argument("--rules", type=int, help="rule count of figure 1 (default 1k/10k/100k)")
    bench.add_argument("--events", type=int, help="catch-up backlog (default 20,000)")
    bench.add_argument("--rate", type=float, default=1000.0, help="higher live rate, events/s")
    bench.add_argument("--workers", type=int, default=2, help="engine worker processes")
    bench.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    bench.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SECTION",
        help="run only this section (evaluation, confirmations, doorbell, live, actions, memory,"
        " tenants, digests, absence); repeatable",
    )
    bench.add_argument("--database-url", help="a database the bench may EMPTY (default: own)")
    bench.add_argument("--redis-url", help="a Redis the bench may FLUSH (default: own)")
    return parser


def describe(exc: BaseException) -> str:
    """The message and its cause chain, one line each."""
    lines = [str(exc) or type(exc).__name__]
    seen = {id(exc)}
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause).strip()
        if text and text not in lines[-1]:
            lines.append(f"  caused by: {text}")
        cause = cause.__cause__ or cause.__context__
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(level=args.log_level, fmt=args.log_format)
    try:
        return int(args.func(args))
    except EngineError as exc:
        print(f"error: {logs.redact_text(describe(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stderr.close()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
