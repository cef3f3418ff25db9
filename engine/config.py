"""Loading ``config.yaml``: YAML with ``${VAR}`` expansion and ``ENGINE_<KEY>`` overrides.

Errors name the file, the line and what was expected; an unset variable without a
default names the variable.  Relative rule paths are resolved against the config
file's directory.  The sections' tunables, with their units in their names, are in
``engine.tunables``; their names are imported from here as well.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from actions.base import ActionSettings
from engine.chains_config import ChainsSettings, parse_chains
from engine.source_config import SourceSettings, read_source
from engine.tunables import (
    ApiSettings,
    EngineTunables,
    RetentionSettings,
    RuleFileLimits,
    TenantSettings,
    WorkerTunables,
)
from rules.envsubst import RuleEnvironment, UnsetVariableError, expand_env, variable_names
from rules.errors import ConfigError

__all__ = [
    "ApiSettings",
    "EngineTunables",
    "RetentionSettings",
    "RuleFileLimits",
    "Settings",
    "TenantSettings",
    "WorkerTunables",
    "load_config",
]

DEFAULT_DATABASE_URL = "postgresql://localhost:5432/engine"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
TOP_LEVEL_KEYS = (
    "database_url",
    "redis_url",
    "rules",
    "http",
    "telegram",
    "network",
    "mcp",
    "engine",
    "worker",
    "retention",
    "rules_env",
    "api",
    "tenants",
    "secrets_key",
    "rule_files",
    "source",
    "chains",
)
# Variables rules may read only when ``rules_env`` names them exactly (no glob): the
# engine's own settings and anything named like a credential or a connection string.
SENSITIVE_VARIABLE_GLOBS = (
    "ENGINE_*",
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSPHRASE*",
    "*CREDENTIAL*",
    "*KEY*",
    "*DSN*",
    "*DATABASE_URL*",
    "*REDIS_URL*",
)
# Without ``rules_env``: every variable but the sensitive ones.
DEFAULT_RULES_ENV = ("*",)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    rules: tuple[str, ...] = ()
    http_listen: str | None = "127.0.0.1:9187"
    actions: ActionSettings = field(default_factory=ActionSettings)
    engine: EngineTunables = field(default_factory=EngineTunables)
    worker: WorkerTunables = field(default_factory=WorkerTunables)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    rules_env: tuple[str, ...] = DEFAULT_RULES_ENV  # globs of variables rules may read
    tenants: TenantSettings = field(default_factory=TenantSettings)
    rule_files: RuleFileLimits = field(default_factory=RuleFileLimits)
    chains: ChainsSettings = field(default_factory=ChainsSettings)  # confirmations per chain
    # Urlsafe base64 of 32 bytes sealing tenants' secrets; None: secrets cannot be stored
    # nor used (engine.tenants.secrets_box says so when asked).
    secrets_key: str | None = None
    config_variables: frozenset[str] = frozenset()  # the ${VAR}s of the config file itself
    source: str | None = None  # the config file, when there is one
    # ``source:``: the indexer's own tables, attached by `engine migrate`.
    source_tables: SourceSettings | None = None

    @property
    def bot_names(self) -> frozenset[str]:
        return frozenset(self.actions.telegram_bots)

    def rule_loading(self, *, check_bots: bool = True) -> dict[str, Any]:
        """What loading rule files takes from the config, the same for every command that
        loads them (``load_rules`` keywords): the environment ``rules_env`` lets rules
        read, the bots (``check_bots`` False: any bot name is accepted), the longest
        action timeouts and the YAML alias bound."""
        return {
            "environ": self.rules_environ(),
            "bot_names": self.bot_names if check_bots else None,
            "timeout_limits_s": self.action_timeout_limits_s,
            "max_aliased_values": self.rule_files.max_aliased_values,
        }

    def is_sensitive_variable(self, name: str) -> bool:
        """The engine's own settings, the config file's variables, credential-like names."""
        upper = name.upper()
        return name in self.config_variables or any(
            fnmatch.fnmatchcase(upper, glob) for glob in SENSITIVE_VARIABLE_GLOBS
        )

    def rules_environ(self, environ: Mapping[str, str] | None = None) -> RuleEnvironment:
        """The environment as rule files may read it (``rules_env``), at load and in workers."""
        return RuleEnvironment(
            os.environ if environ is None else environ,
            self.rules_env,
            sensitive=self.is_sensitive_variable,
            allowed_by=self.source or "the config",
        )

    @property
    def action_timeout_limits_s(self) -> dict[str, float]:
        """What a rule's action `timeout` may be at most, per kind (passed to the loader)."""
        return self.worker.max_action_timeouts_s


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key."""


def _lines_of(text: str) -> dict[tuple[str, ...], int]:
    """Line (1-based) of each mapping key path in the document."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)

    try:
        root = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in TOP_LEVEL_KEYS:
        raw = environ.get(f"ENGINE_{key.upper()}")
        if raw is None:
            continue
        # URLs and keys are taken as written: YAML would read some of them as numbers.
        found[key] = raw if key.endswith(("_url", "_key")) else yaml.safe_load(raw)
    return found


def load_config(
    path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the config file (if any), expand variables and apply ``ENGINE_*`` overrides."""
    env = os.environ if environ is None else environ
    source = None if path is None else str(path)
    doc: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    if source is not None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the config file: {exc.strerror}", file=source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = None if mark is None else mark.line + 1
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"invalid YAML: {problem}", file=source, line=line) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("expected a mapping of config keys at the top", file=source, line=1)
        doc, lines = loaded, _lines_of(text)
    errors: list[ConfigError] = []

    def unset(exc: UnsetVariableError, where: tuple[str | int, ...]) -> None:
        keys = tuple(str(p) for p in where)
        errors.append(
            ConfigError(f"{'.'.join(keys)}: {exc}", file=source, line=_nearest_line(lines, keys))
        )

    config_variables = frozenset(variable_names(doc))
    doc = expand_env(doc, env, on_error=unset)
    if errors:
        raise errors[0]
    doc.update(_env_overrides(env))
    return _build(doc, source, lines, config_variables)


def _nearest_line(lines: Mapping[tuple[str, ...], int], keys: tuple[str, ...]) -> int | None:
    while keys:
        if keys in lines:
            return lines[keys]
        keys = keys[:-1]
    return None


class _Reader:
    """Typed access to the config document, with errors that name file and line."""

    def __init__(self, doc: Mapping[str, Any], source: str | None, lines: Mapping[Any, int]):
        self.doc, self.source, self.lines = doc, source, lines

    def fail(self, keys: tuple[str, ...], expected: str, got: Any) -> ConfigError:
        return ConfigError(
            f"{'.'.join(keys)} must be {expected} (got {got!r})",
            file=self.source,
            line=_nearest_line(self.lines, keys),
        )

    def get(self, *keys: str) -> Any:
        node: Any = self.doc
        for i, key in enumerate(keys):
            if node is None:
                return None
            if not isinstance(node, Mapping):
                raise self.fail(keys[:i], "a mapping", node)
            node = node.get(key)
        return node

    def string(self, *keys: str, default: str | None = None) -> str | None:
        value = self.get(*keys)
        if value is None:
            return default
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.fail(keys, "a string", value)
        return str(value)

    def boolean(self, *keys: str, default: bool) -> bool:
        value = self.get(*keys)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(keys, "true or false", value)
        return value

    def section(self, cls: type[Any], key: str) -> Any:
        value = self.get(key) or {}
        if not isinstance(value, Mapping):
            raise self.fail((key,), "a mapping", value)
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, raw in value.items():
            if name not in known:
                raise self.fail((key, str(name)), f"one of {', '.join(known)}", name)
            default: Any = known[name].default
            try:
                kwargs[name] = type(default)(raw)
            except (TypeError, ValueError):
                raise self.fail((key, str(name)), type(default).__name__, raw) from None
            if isinstance(kwargs[name], int | float) and kwargs[name] <= 0:
                raise self.fail((key, str(name)), "a positive number", raw)
        return cls(**kwargs)


def _rules_env(read: _Reader) -> tuple[str, ...]:
    value = read.get("rules_env")
    if value is None:
        return DEFAULT_RULES_ENV
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise read.fail(("rules_env",), "a list of variable names or globs", value)
    return tuple(value)


def _secrets_key(read: _Reader) -> str | None:
    """The key, checked now so `engine check` finds a bad one (never quoted: it is secret)."""
    key = read.string("secrets_key") or None
    if key is not None:
        from engine.tenants.secrets_box import SecretsBox  # cryptography: only when used

        try:
            SecretsBox(key)
        except ConfigError as exc:
            raise ConfigError(
                f"secrets_key: {exc.message}",
                file=read.source,
                line=_nearest_line(read.lines, ("secrets_key",)),
            ) from None
    return key


def _build(
    doc: Mapping[str, Any],
    source: str | None,
    lines: Mapping[Any, int],
    config_variables: frozenset[str] = frozenset(),
) -> Settings:
    read = _Reader(doc, source, lines)
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            raise read.fail(
                (str(key),), f"one of the known keys ({', '.join(TOP_LEVEL_KEYS)})", key
            )
    base = Path(source).resolve().parent if source else Path.cwd()
    rules_value = read.get("rules")
    if rules_value is None:
        rules_value = []
    if isinstance(rules_value, str):
        rules_value = [rules_value]
    if not isinstance(rules_value, list) or not all(isinstance(r, str) for r in rules_value):
        raise read.fail(("rules",), "a list of rule files or directories", rules_value)
    rule_paths = tuple(str(base / r) if not os.path.isabs(r) else r for r in rules_value)

    bots_value = read.get("telegram", "bots") or {}
    if not isinstance(bots_value, Mapping):
        raise read.fail(("telegram", "bots"), "a mapping of bot name to {token: ...}", bots_value)
    bots: dict[str, str] = {}
    for name, bot in bots_value.items():
        token = bot.get("token") if isinstance(bot, Mapping) else None
        if not isinstance(token, str) or not token:
            raise read.fail(("telegram", "bots", str(name), "token"), "a bot token", token)
        bots[str(name)] = token

    defaults = ActionSettings()
    actions = ActionSettings(
        allow_private_network=read.boolean("network", "allow_private", default=False),
        telegram_api_base_url=(
            read.string("telegram", "api_base_url", default=defaults.telegram_api_base_url)
            or defaults.telegram_api_base_url
        ).rstrip("/"),
        telegram_bots=bots,
        ipfs_gateway=read.string("mcp", "ipfs_gateway", default=defaults.ipfs_gateway)
        or defaults.ipfs_gateway,
        telegram_max_retry_after_s=_positive_seconds(
            read, ("telegram", "max_retry_after_s"), defaults.telegram_max_retry_after_s
        ),
    )
    http = read.get("http")
    http_listen = (
        read.string("http", "listen")
        if isinstance(http, Mapping) and "listen" in http
        else "127.0.0.1:9187"
    )
    worker = read.section(WorkerTunables, "worker")
    return Settings(
        database_url=read.string("database_url", default=DEFAULT_DATABASE_URL)
        or DEFAULT_DATABASE_URL,
        redis_url=read.string("redis_url", default=DEFAULT_REDIS_URL) or DEFAULT_REDIS_URL,
        rules=rule_paths,
        http_listen=http_listen,
        actions=actions,
        engine=read.section(EngineTunables, "engine"),
        worker=worker,
        retention=read.section(RetentionSettings, "retention"),
        api=read.section(ApiSettings, "api"),
        rules_env=_rules_env(read),
        tenants=read.section(TenantSettings, "tenants"),
        rule_files=read.section(RuleFileLimits, "rule_files"),
        chains=parse_chains(read.get("chains"), read.fail),
        secrets_key=_secrets_key(read),
        config_variables=config_variables,
        source=source,
        source_tables=read_source(read.get("source"), read.fail, config_file=source, lines=lines),
    )


def _positive_seconds(read: _Reader, keys: tuple[str, ...], default: float) -> float:
    value = read.get(*keys)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise read.fail(keys, "a positive number of seconds", value)
    return float(value)
