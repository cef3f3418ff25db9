"""A rule's `labels:`: free key/value text that templates (``rule.labels``) and silence
matchers (rules.silence_match) read.  Labels never change what a rule evaluates."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from rules.reporting import Problems, shown

#: A label name is usable as ``rule.labels.NAME`` in a template and as ``--match NAME=…``.
LABEL_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_LABELS: Final = 32
MAX_VALUE_CHARS: Final = 200
#: Shared by every rule without labels (rules are numerous).
NO_LABELS: Final[Mapping[str, str]] = MappingProxyType({})


def label_text(value: Any) -> str:
    """A label or group value as matchers compare it: booleans as true/false, hex folded."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    return text.lower() if text[:2] in ("0x", "0X") else text


def compile_labels(spec: Any, sink: Problems) -> Mapping[str, str] | None:
    """`labels:` as a mapping of name -> text; None (reported) when it is malformed."""
    if spec is None:
        return NO_LABELS
    if not isinstance(spec, Mapping):
        sink.at(("labels",), f"must be a mapping of name: value (got {shown(spec)})")
        return None
    if len(spec) > MAX_LABELS:
        sink.at(("labels",), f"may hold at most {MAX_LABELS} labels (got {len(spec)})")
        return None
    labels: dict[str, str] = {}
    for name, value in spec.items():
        if not isinstance(name, str) or not LABEL_NAME.match(name):
            sink.at(
                ("labels",),
                "has a name that is not letters, digits and _ (not first), at most 63"
                f" characters: {shown(name)}",
            )
            continue
        if value is None or not isinstance(value, str | int | bool) or isinstance(value, float):
            sink.at(("labels", name), f"must be a string, number or boolean (got {shown(value)})")
            continue
        text = value if isinstance(value, str) else label_text(value)
        if len(text) > MAX_VALUE_CHARS:
            sink.at(("labels", name), f"must be at most {MAX_VALUE_CHARS} characters")
            continue
        labels[name] = text
    return MappingProxyType(labels) if labels else NO_LABELS
