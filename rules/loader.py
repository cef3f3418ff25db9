"""Load rule files: YAML → `${VAR}` expansion → compile, collecting every error.

The only I/O of the package: reading the files it is given.  A file that cannot be read,
a rule that does not compile, an id used twice: each is a RuleError in the result, and
loading goes on, so `engine check` reports everything at once.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from rules.compile import compile_rule, rule_id_of
from rules.envsubst import DisallowedVariableError, UnsetVariableError, expand_env
from rules.errors import RuleError
from rules.gc_pause import gc_paused
from rules.model import Rule, document_json
from rules.reporting import Problems, shown
from rules.yaml_source import MAX_ALIASED_VALUES, MAX_FILE_BYTES, LineMap, parse_yaml

RULE_FILE_SUFFIXES = (".yaml", ".yml")


@dataclass
class LoadResult:
    """The rules that compiled, every error found, and the files read."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        """Append another result (one more file) to this one."""
        self.rules.extend(other.rules)
        self.errors.extend(other.errors)
        self.files.extend(other.files)


@dataclass(frozen=True)
class _DeploymentLimits:
    """What the config allows rules to use: bot names, action timeouts per kind."""

    bot_names: Collection[str] | None
    timeouts_s: Mapping[str, float] | None


def rule_files(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[RuleError]]:
    """The files named by ``paths``: files as given, directories searched recursively."""
    files: list[str] = []
    errors: list[RuleError] = []
    for given in paths:
        path = FsPath(given)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.rglob("*") if p.suffix in RULE_FILE_SUFFIXES and p.is_file()
            )
            files.extend(found)
        elif path.is_file():
            files.append(str(path))
        else:
            errors.append(RuleError("no such file or directory", file=str(path)))
    return files, errors


def load_rules(
    paths: Sequence[str | os.PathLike[str]],
    *,
    environ: Mapping[str, str],
    bot_names: Collection[str] | None = None,
    timeout_limits_s: Mapping[str, float] | None = None,
    shared: dict[Any, Any] | None = None,
    check_ids: bool = True,
    max_aliased_values: int = MAX_ALIASED_VALUES,
) -> LoadResult:
    """Load every rule file under ``paths`` (files or directories, ``*.yaml``/``*.yml``).

    ``bot_names`` and ``timeout_limits_s`` (the longest ``timeout`` per action kind) come
    from the config; None checks nothing against it.  ``shared``: compiled parts to share
    with other loads; ``check_ids`` False leaves the check of ids used twice to the caller
    (who merges this load with others).  ``max_aliased_values``: the values one rule may
    get through YAML aliases.
    """
    limits = _DeploymentLimits(bot_names, timeout_limits_s)
    files, errors = rule_files(paths)
    result = LoadResult(errors=errors)
    if shared is None:
        shared = {}  # compiled parts common to rules of every file
    for file in files:
        try:
            if os.path.getsize(file) > MAX_FILE_BYTES:
                result.errors.append(
                    RuleError(f"file is larger than {MAX_FILE_BYTES} bytes", file=file, line=1)
                )
                result.files.append(file)
                continue
            with open(file, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            result.errors.append(RuleError(f"cannot read the file: {exc}", file=file))
            continue
        with gc_paused():
            result.extend(_load_text(text, file, environ, limits, shared, max_aliased_values))
    if check_ids:
        check_duplicate_ids(result)
    return result


def load_rules_text(
    text: str,
    source: str,
    *,
    environ: Mapping[str, str],
    bot_names: Collection[str] | None = None,
    timeout_limits_s: Mapping[str, float] | None = None,
    max_aliased_values: int = MAX_ALIASED_VALUES,
) -> LoadResult:
    """Load rules from ``text`` as if read from the file ``source``."""
    limits = _DeploymentLimits(bot_names, timeout_limits_s)
    result = _load_text(text, source, environ, limits, {}, max_aliased_values)
    check_duplicate_ids(result)
    return result


def load_tenant_rule(
    document: Any,
    *,
    engine_id: str,
    org_id: int,
    bot_names: Collection[str] | None = None,
    timeout_limits_s: Mapping[str, float] | None = None,
    shared: dict[Any, Any] | None = None,
) -> tuple[Rule | None, list[RuleError]]:
    """Compile one organization's stored rule ``document`` (a mapping, as the API stored it).

    The same compiler as files, with an empty environment: a tenant's rule never reads the
    server's environment, so a ``${VAR}`` in it is an error.  The rule gets ``engine_id``
    (``'<org_id>/<rule_id>'``, the key of its state and action rows) and ``org_id``.
    ``shared`` lets many documents compiled together share their compiled parts.
    """
    source = f"org {org_id} rule {engine_id.partition('/')[2] or engine_id}"
    sink = Problems(source, LineMap(), shared={} if shared is None else shared)
    limits = _DeploymentLimits(bot_names, timeout_limits_s)
    rule = _load_rule(document, (), sink, source, {}, limits, engine_id=engine_id, org_id=org_id)
    if rule is None:
        return None, sink.errors
    return rule, []


def _load_text(
    text: str,
    source: str,
    environ: Mapping[str, str],
    limits: _DeploymentLimits,
    shared: dict[Any, Any],
    max_aliased_values: int,
) -> LoadResult:
    parsed = parse_yaml(text, max_aliased_values=max_aliased_values)
    sink = Problems(source, parsed.lines, shared=shared)
    result = LoadResult(files=[source], errors=sink.errors)
    for problem in parsed.problems:
        sink.errors.append(
            RuleError(problem.message, file=source, line=problem.line, rule_id=problem.rule_id)
        )
    data = parsed.data
    if parsed.problems or data is None:
        if data is None and not parsed.problems:
            sink.at((), "the file is empty; expected `rules:` with a list of rules")
        return result
    if not isinstance(data, Mapping) or not isinstance(data.get("rules"), list):
        sink.at((), "expected a mapping with `rules:` holding a list of rules")
        return result
    for key in data:
        # `x-…` keys hold YAML anchors shared by rules (`x-defaults: &defaults …`).
        if key != "rules" and not key.startswith("x-"):
            sink.at(
                (key,),
                "is not a known key; a rule file has `rules:` (and `x-…` keys "
                "for shared YAML anchors)",
            )
    for index, raw in enumerate(data["rules"]):
        rule = _load_rule(raw, ("rules", index), sink, source, environ, limits)
        if rule is not None:
            result.rules.append(rule)
    return result


def _load_rule(
    raw: Any,
    base: tuple[str | int, ...],
    file_sink: Problems,
    source: str,
    environ: Mapping[str, str],
    limits: _DeploymentLimits,
    *,
    engine_id: str | None = None,
    org_id: int | None = None,
) -> Rule | None:
    sink = file_sink.rule(base, rule_id_of(raw))
    if not isinstance(raw, Mapping):
        sink.at((), f"each rule must be a mapping with id, on, where, actions … (got {shown(raw)})")
        return None
    before = sink.count

    def unset(exc: UnsetVariableError, path: tuple[str | int, ...]) -> None:
        if isinstance(exc, DisallowedVariableError):
            sink.at(path, str(exc), prefix=False)
            return
        sink.at(
            path,
            f"uses ${{{exc.name}}}, which is not set in the environment "
            f"(set it, or write ${{{exc.name}:-default}})",
        )

    text = document_json(raw)
    # Without `${` in its text, expanding would copy the rule unchanged.
    expanded = expand_env(raw, environ, on_error=unset) if "${" in text else raw
    line = file_sink.lines.line_of(base) or 0
    rule = compile_rule(
        raw,
        expanded,
        sink,
        source_file=source,
        source_line=line,
        bot_names=limits.bot_names,
        timeout_limits_s=limits.timeouts_s,
        document_text=text,
        engine_id=engine_id,
        org_id=org_id,
    )
    return rule if sink.count == before else None


def check_duplicate_ids(result: LoadResult) -> None:
    """Report (and drop) every rule whose id an earlier rule of ``result`` has."""
    first: dict[str, Rule] = {}
    unique: list[Rule] = []
    for rule in result.rules:
        earlier = first.get(rule.id)
        if earlier is None:
            first[rule.id] = rule
            unique.append(rule)
            continue
        result.errors.append(
            RuleError(
                f"id '{rule.id}' is already used at {earlier.source_file}:{earlier.source_line}; "
                "rule ids must be unique across all files",
                file=rule.source_file,
                line=rule.source_line,
                rule_id=rule.id,
            )
        )
    result.rules[:] = unique
