"""``engine rules push DIR``: make an organization's rules equal to a directory of rule files.

What a rules repository's CI runs after ``engine rules test``.  Every rule file of DIR is
read and each rule compiled locally exactly as the API compiles it (rules written through
the API never read an environment, so a ``${VAR}`` fails here with the API's advice);
then the organization's rules are listed (``GET /v1/rules``, every page), a plan is
printed — create, update, delete (only with ``--prune``), unchanged — and applied unless
``--dry-run``.  A rule is unchanged when the stored document equals the local one (the
API stores the document as compiled, ``id`` included).  Nothing is sent when a file has
a mistake.  Any error is an ``EngineError``: the CLI prints it and exits 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from engine.api.errors import ApiError
from engine.api.rule_bodies import compile_tenant_document
from rules.errors import EngineError
from rules.loader import rule_files
from rules.yaml_source import MAX_FILE_BYTES, parse_yaml

REQUEST_TIMEOUT_S = 30.0
PAGE_SIZE = 500


class PushError(EngineError):
    """The directory's rules cannot be pushed (a file's mistakes, or the API refused)."""


@dataclass(frozen=True)
class LocalRule:
    """A rule of the directory: its id, its document as the API would store it, its place."""

    id: str
    document: dict[str, Any]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Plan:
    create: list[LocalRule] = field(default_factory=list)
    update: list[LocalRule] = field(default_factory=list)
    unchanged: list[LocalRule] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)  # only with --prune
    kept: list[str] = field(default_factory=list)  # on the server only, without --prune

    def lines(self) -> Iterator[str]:
        for rule in self.create:
            yield f"create     {rule.id}  ({rule.where})"
        for rule in self.update:
            yield f"update     {rule.id}  ({rule.where})"
        for rule_id in self.delete:
            yield f"delete     {rule_id}"
        for rule in self.unchanged:
            yield f"unchanged  {rule.id}"
        for rule_id in self.kept:
            yield f"kept       {rule_id}  (not in the directory; --prune deletes it)"

    def summary(self) -> str:
        return (
            f"{len(self.create)} to create, {len(self.update)} to update, "
            f"{len(self.delete)} to delete, {len(self.unchanged)} unchanged"
            + (f", {len(self.kept)} kept" if self.kept else "")
        )


def _file_rules(file: str) -> tuple[list[LocalRule], list[str]]:
    """The rules of one file, compiled as the API compiles them, or its mistakes."""
    try:
        if Path(file).stat().st_size > MAX_FILE_BYTES:
            return [], [f"{file}:1: file is larger than {MAX_FILE_BYTES} bytes"]
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{file}: cannot read the file: {exc}"]
    parsed = parse_yaml(text)
    if parsed.problems:
        return [], [f"{file}:{p.line or 1}: {p.message}" for p in parsed.problems]
    data = parsed.data
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        return [], [f"{file}:1: expected a mapping with `rules:` holding a list of rules"]
    found, errors = [], []
    for key in data:
        if key != "rules" and not str(key).startswith("x-"):
            line = parsed.lines.line_of((key,)) or 1
            errors.append(f"{file}:{line}: unknown key {key!r}: a rule file holds `rules:`")
    for index, raw in enumerate(data["rules"]):
        base = ("rules", index)
        line = parsed.lines.line_of(base) or 1
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(rule_id, str):
            errors.append(f"{file}:{line}: rules[{index}]: every pushed rule needs an `id`")
            continue
        try:
            rule = compile_tenant_document(raw, rule_id, parsed.lines, base)
        except ApiError as exc:
            for item in exc.errors or []:
                errors.append(f"{file}:{item.line or line} rule {rule_id!r}: {item.message}")
            continue
        found.append(LocalRule(rule_id, rule.document, file, line))
    return found, errors


def read_rule_dir(directory: str) -> list[LocalRule]:
    """Every rule of the directory's rule files; PushError listing every mistake."""
    if not Path(directory).is_dir():
        raise PushError(f"{directory}: not a directory of rule files")
    files, missing = rule_files([directory])
    errors = [str(e) for e in missing]
    rules: dict[str, LocalRule] = {}
    for file in files:
        found, mistakes = _file_rules(file)
        errors.extend(mistakes)
        for rule in found:
            first = rules.get(rule.id)
            if first is not None:
                errors.append(
                    f"{rule.where} rule {rule.id!r}: the id is used twice (first at {first.where})"
                )
            else:
                rules[rule.id] = rule
    if errors:
        raise PushError("\n".join([*errors, f"{len(errors)} error(s): nothing was pushed"]))
    return list(rules.values())


class RulesApi:
    """The few calls of the rules API a push makes."""

    def __init__(self, url: str, key: str, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=REQUEST_TIMEOUT_S,
            transport=transport,
        )

    def __enter__(self) -> RulesApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def _call(self, what: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        try:
            answer = send()
        except httpx.HTTPError as exc:
            raise PushError(f"{what}: cannot reach the API at {self.url}: {exc}") from exc
        if answer.is_success:
            return answer
        try:
            message = str(answer.json()["message"])
        except (ValueError, KeyError, TypeError):
            message = answer.text[:300]
        raise PushError(f"{what}: the API answered {answer.status_code}: {message}")

    def stored_rules(self) -> dict[str, dict[str, Any]]:
        """Every rule of the organization by id (its stored document), all pages."""
        found: dict[str, dict[str, Any]] = {}
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if after is not None:
                params["after"] = after
            send = functools.partial(self.client.get, "/v1/rules", params=params)
            page = self._call("listing the organization's rules", send).json()
            for stored in page["rules"]:
                found[stored["id"]] = stored["rule"]
            after = page.get("next")
            if after is None:
                return found

    def put(self, rule: LocalRule) -> None:
        self._call(
            f"{rule.where} rule {rule.id!r}",
            lambda: self.client.put(
                f"/v1/rules/{rule.id}",
                content=json.dumps(rule.document, ensure_ascii=False).encode(),
                headers={"Content-Type": "application/json"},
            ),
        )

    def delete(self, rule_id: str) -> None:
        self._call(f"deleting rule {rule_id!r}", lambda: self.client.delete(f"/v1/rules/{rule_id}"))


def make_plan(local: list[LocalRule], stored: dict[str, dict[str, Any]], *, prune: bool) -> Plan:
    plan = Plan()
    for rule in sorted(local, key=lambda r: r.id):
        if rule.id not in stored:
            plan.create.append(rule)
        elif stored[rule.id] == rule.document:
            plan.unchanged.append(rule)
        else:
            plan.update.append(rule)
    names = {rule.id for rule in local}
    extra = sorted(rule_id for rule_id in stored if rule_id not in names)
    (plan.delete if prune else plan.kept).extend(extra)
    return plan


def push_rules(
    directory: str,
    *,
    url: str,
    key: str,
    dry_run: bool,
    prune: bool,
    out: Callable[[str], None] = print,
) -> Plan:
    """Read, plan, print the plan and (unless ``dry_run``) apply it; the plan."""
    local = read_rule_dir(directory)
    with RulesApi(url, key) as api:
        plan = make_plan(local, api.stored_rules(), prune=prune)
        for line in plan.lines():
            out(line)
        if dry_run:
            out(f"plan: {plan.summary()} (dry run: nothing changed)")
            return plan
        for rule in [*plan.create, *plan.update]:
            api.put(rule)
        for rule_id in plan.delete:
            api.delete(rule_id)
        out(f"applied: {plan.summary()}")
    return plan
