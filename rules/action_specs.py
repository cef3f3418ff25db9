"""Validate a rule's `actions` list and build ActionSpecs.

The checks here are the ones that need no template engine: keys, types, URLs, parse
modes, retry policy, bot names.  Template syntax and names are checked by
rules.template_check on the same actions.

Credentials (a rest header value or signing ``secret``, a telegram ``bot_token``, an mcp
``token``) may be written ``{secret: NAME}`` (optionally with ``prefix: "Bearer "``): a
secret of the rule's organization, resolved by the worker at each attempt and never
rendered as a template.  The compiler accepts the form in every rule: only the worker
knows whose the rule is, and a file rule's worker refuses it (file rules use ``${VAR}``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from rules.durations import DurationError, parse_duration
from rules.model import ActionSpec, RetryPolicy
from rules.reporting import Problems, shown
from rules.shapes import check_keys, mapping_at, positive_int
from rules.yaml_source import Path

KINDS: Final = ("telegram", "rest", "mcp")
COMMON_KEYS: Final = ("name", "retry")
KIND_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "telegram": ("chat_id", "text", "parse_mode", "bot", "bot_token", "disable_preview"),
    "rest": ("url", "method", "headers", "body", "timeout", "secret", "expect_status"),
    "mcp": ("url", "agent", "tool", "arguments", "token", "verify_file_hash", "timeout"),
}
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "telegram": ("chat_id", "text"),
    "rest": ("url",),
    "mcp": ("tool",),
}
PARSE_MODES: Final = ("HTML", "MarkdownV2", "none")
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_ATTEMPTS: Final = 100
DEFAULT_BOT: Final = "default"
#: The credential places of each kind that take ``{secret: NAME}``; rest headers too.
SECRET_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "telegram": ("bot_token",),
    "rest": ("secret",),
    "mcp": ("token",),
}
SECRET_REF_KEYS: Final = ("secret", "prefix")
# The CHECK of secrets.name (sql/004), so a rule cannot name a secret that cannot exist.
SECRET_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def is_secret_ref(value: Any) -> bool:
    """Whether ``value`` is written as ``{secret: NAME}`` (checked or not)."""
    return isinstance(value, Mapping) and "secret" in value


def secret_refs(kind: str, spec: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Each ``{secret: …}`` of an action's settings with its place: ``("secret",)``,
    ``("headers", "Authorization")``."""
    for key in SECRET_FIELDS.get(kind, ()):
        if is_secret_ref(spec.get(key)):
            yield (key,), spec[key]
    headers = spec.get("headers") if kind == "rest" else None
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if is_secret_ref(value):
                yield ("headers", str(name)), value


def _check_secret_ref(value: Mapping[str, Any], sink: Problems, path: Path) -> None:
    check_keys(value, SECRET_REF_KEYS, sink, path)
    name = value.get("secret")
    if not isinstance(name, str) or not SECRET_NAME.match(name):
        sink.at(
            (*path, "secret"),
            "must name a secret: a letter or '_', then letters, digits, '_', '.' or '-'"
            f" (got {shown(name)})",
        )
    if "prefix" in value and not isinstance(value["prefix"], str):
        sink.at((*path, "prefix"), f"must be a string (got {shown(value['prefix'])})")


def compile_actions(
    raw_actions: Any,
    expanded_actions: Any,
    sink: Problems,
    bot_names: Collection[str] | None,
    path: Path = ("actions",),
    timeout_limits_s: Mapping[str, float] | None = None,
) -> tuple[ActionSpec, ...]:
    """ActionSpecs from the actions as written; checks run on the ``${VAR}``-expanded copy.

    ``timeout_limits_s``: the longest ``timeout`` each kind may set (the worker's limits);
    None checks no limit.
    """
    if not isinstance(expanded_actions, list) or not expanded_actions:
        sink.at(path, f"must be a non-empty list of actions (got {shown(expanded_actions)})")
        return ()
    specs = []
    for index, (raw, item) in enumerate(zip(raw_actions, expanded_actions, strict=True)):
        spec = _compile_action(
            index, raw, item, sink, _Limits(bot_names, timeout_limits_s), (*path, index)
        )
        if spec is not None:
            specs.append(spec)
    return tuple(specs)


@dataclass(frozen=True)
class _Limits:
    """What the deployment allows, from the config (None: not checked)."""

    bot_names: Collection[str] | None
    timeouts_s: Mapping[str, float] | None


def _compile_action(
    index: int,
    raw: Any,
    item: Any,
    sink: Problems,
    limits: _Limits,
    path: Path,
) -> ActionSpec | None:
    item = mapping_at(item, sink, path, "a mapping with one of telegram, rest, mcp")
    if item is None:
        return None
    before = sink.count
    kinds = [key for key in item if key in KINDS]
    check_keys(item, (*KINDS, *COMMON_KEYS), sink, path)
    if len(kinds) != 1:
        sink.at(
            path,
            "needs exactly one of telegram, rest, mcp"
            + (f" (got {', '.join(kinds)})" if kinds else ""),
        )
        return None
    kind = kinds[0]
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        sink.at((*path, "name"), f"must be a string (got {shown(name)})")
    retry = _retry(item.get("retry"), sink, (*path, "retry"))
    body = mapping_at(item[kind], sink, (*path, kind), f"a mapping of {kind} settings")
    if body is not None:
        _check_kind(kind, body, sink, (*path, kind), limits.bot_names)
        _check_timeout_limit(kind, body, sink, (*path, kind), limits.timeouts_s)
    if sink.count != before or body is None or retry is None:
        return None
    return ActionSpec(index=index, kind=kind, name=name, raw=raw[kind], retry=retry)


def _check_kind(
    kind: str,
    body: Mapping[str, Any],
    sink: Problems,
    path: Path,
    bot_names: Collection[str] | None,
) -> None:
    check_keys(body, KIND_KEYS[kind], sink, path, required=REQUIRED[kind])
    for place, ref in secret_refs(kind, body):
        _check_secret_ref(ref, sink, (*path, *place))
    for key in ("text", "tool", "secret", "token", "agent", "bot_token"):
        if key in body and not isinstance(body[key], str) and not is_secret_ref(body[key]):
            sink.at((*path, key), f"must be a string (got {shown(body[key])})")
    if "chat_id" in body and (
        isinstance(body["chat_id"], bool) or not isinstance(body["chat_id"], str | int)
    ):
        sink.at(
            (*path, "chat_id"), f"must be a string or an integer (got {shown(body['chat_id'])})"
        )
    if "url" in body:
        _check_url(body["url"], sink, (*path, "url"))
    if kind == "mcp" and "url" not in body and "agent" not in body:
        sink.at(path, "needs 'url' or 'agent'")
    if kind == "telegram":
        _check_telegram(body, sink, path, bot_names)
    for key in ("disable_preview", "verify_file_hash"):
        if key in body and not isinstance(body[key], bool):
            sink.at((*path, key), f"must be true or false (got {shown(body[key])})")
    _check_rest_extras(body, sink, path)


def _check_telegram(
    body: Mapping[str, Any], sink: Problems, path: Path, bot_names: Collection[str] | None
) -> None:
    mode = body.get("parse_mode", "HTML")
    if mode not in PARSE_MODES:
        sink.at(
            (*path, "parse_mode"),
            f"must be one of {', '.join(PARSE_MODES)} (got {shown(mode)})",
        )
    if "bot" in body and "bot_token" in body:
        sink.at(path, "has both bot and bot_token: name a configured bot, or give a token")
    bot = body.get("bot", DEFAULT_BOT)
    if "bot_token" in body:
        return  # the action brings its own bot: no configured bot is needed
    if not isinstance(bot, str):
        sink.at((*path, "bot"), f"must be a string (got {shown(bot)})")
    elif bot_names is not None and bot not in bot_names:
        known = ", ".join(sorted(bot_names)) or "none"
        sink.at(
            (*path, "bot"),
            f"'{bot}' is not a bot under telegram.bots in the config (known: {known})",
        )


def _check_rest_extras(body: Mapping[str, Any], sink: Problems, path: Path) -> None:
    method = body.get("method", "POST")
    if method not in METHODS:
        sink.at((*path, "method"), f"must be one of {', '.join(METHODS)} (got {shown(method)})")
    headers = body.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(v, str) or is_secret_ref(v) for v in headers.values()
    ):
        sink.at(
            (*path, "headers"),
            "must be a mapping of header name to string value (or {secret: NAME})",
        )
    if "arguments" in body and not isinstance(body["arguments"], Mapping):
        sink.at((*path, "arguments"), f"must be a mapping (got {shown(body['arguments'])})")
    if "timeout" in body:
        try:
            parse_duration(body["timeout"])
        except DurationError as exc:
            sink.at((*path, "timeout"), str(exc))
    status = body.get("expect_status", 200)
    codes = status if isinstance(status, list) else [status]
    if not codes or not all(type(c) is int and 100 <= c <= 599 for c in codes):
        sink.at(
            (*path, "expect_status"),
            f"must be an HTTP status or a list of them (got {shown(status)})",
        )


def _check_timeout_limit(
    kind: str,
    body: Mapping[str, Any],
    sink: Problems,
    path: Path,
    limits: Mapping[str, float] | None,
) -> None:
    """A timeout longer than the worker allows would be cut short at run time anyway:
    say so to the author now instead."""
    if limits is None or kind not in limits or "timeout" not in body:
        return
    try:
        seconds = parse_duration(body["timeout"])
    except DurationError:
        return  # reported by _check_rest_extras
    limit = limits[kind]
    if seconds > limit:
        sink.at(
            (*path, "timeout"),
            f"must be at most {limit:g}s, the longest a {kind} action may take on this "
            f"deployment (worker.max_{kind}_timeout_s, at most worker.job_timeout_s, in the "
            f"config; got {shown(body['timeout'])})",
        )


def _check_url(url: Any, sink: Problems, path: Path) -> None:
    if not isinstance(url, str):
        sink.at(path, f"must be a string (got {shown(url)})")
    elif "{{" not in url and not url.startswith(("http://", "https://")):
        sink.at(path, f"must be an http:// or https:// URL (got {shown(url)})")


def _retry(spec: Any, sink: Problems, path: Path) -> RetryPolicy | None:
    if spec is None:
        return RetryPolicy()
    spec = mapping_at(spec, sink, path, "a mapping with attempts, backoff, max_backoff")
    if spec is None:
        return None
    before = sink.count
    check_keys(spec, ("attempts", "backoff", "max_backoff"), sink, path)
    attempts = positive_int(spec, "attempts", sink, path, default=5, maximum=MAX_ATTEMPTS)
    delays = {}
    for key, default in (("backoff", 2.0), ("max_backoff", 600.0)):
        try:
            delays[key] = float(parse_duration(spec[key])) if key in spec else default
        except DurationError as exc:
            sink.at((*path, key), str(exc))
    if sink.count != before or attempts is None:
        return None
    if delays["max_backoff"] < delays["backoff"]:
        sink.at((*path, "max_backoff"), "must not be shorter than backoff")
        return None
    return RetryPolicy(attempts, delays["backoff"], delays["max_backoff"])
