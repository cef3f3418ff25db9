"""The Jinja2 sandbox templates run in, with bounds on the work one render may do.

Rule authors are trusted to write rules, not to run code: templates run in an immutable
sandbox (no attribute of the `__class__.__mro__` kind, no mutation of the context), and
with limits so a template cannot hang or exhaust memory:

- ``range()`` is Jinja's safe range (at most 100,000 items) and ``namespace``/``lipsum``
  are removed (they let loops accumulate or produce unbounded text);
- ``*``, ``**`` and ``%`` are intercepted so `"a" * 10**9`, `10 ** 10 ** 10` and
  `"%0999999999d" % 1` are refused before they allocate;
- string methods and filters that pad or multiply text by a caller-given width are removed
  or bounded;
- every render has a wall-clock budget, enforced by a trace hook on template frames only
  (so nested loops are stopped), and every rendered field is capped at MAX_OUTPUT_CHARS.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Final

from jinja2 import StrictUndefined, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rules.errors import EngineError

MAX_OUTPUT_CHARS: Final = 64 * 1024
MAX_RENDER_S: Final = 0.5
MAX_EXPONENT: Final = 256
TEMPLATE_FILENAME: Final = "<template>"

# str methods that allocate in proportion to an argument rather than to their input.
_AMPLIFYING_METHODS: Final = frozenset(
    {"ljust", "rjust", "center", "zfill", "expandtabs", "format", "format_map", "replace", "join"}
)
# Filters removed: padding by width, randomness (tests must be deterministic), pprint.
_REMOVED_FILTERS: Final = ("center", "indent", "wordwrap", "random", "pprint", "xmlattr")
_WIDE_FORMAT: Final = re.compile(r"%[^a-zA-Z%]*?(\d{4,}|\*)")


class RenderBudgetExceeded(SecurityError, EngineError):
    """A template used more time or produced more text than one render may."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose arithmetic and string operations are size-bounded."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Refuse the sandbox's unsafe attributes and width-driven str methods."""
        if isinstance(obj, str) and attr in _AMPLIFYING_METHODS:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Refuse width-driven str methods however they were reached (`x.format` …)."""
        name = getattr(__obj, "__name__", "")
        owner = getattr(__obj, "__self__", None)
        qualified = str(getattr(__obj, "__qualname__", ""))
        if name in _AMPLIFYING_METHODS and (isinstance(owner, str) or qualified.startswith("str.")):
            raise RenderBudgetExceeded(f"str.{name}() is not available in templates")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Bound the size of ``*``, ``**`` and ``%`` results before computing them."""
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise RenderBudgetExceeded(f"exponent {right} is larger than {MAX_EXPONENT}")
        if operator == "*":
            check_repeat(left, right)
            check_repeat(right, left)
        if operator == "%" and isinstance(left, str):
            check_format(left)
        return super().call_binop(context, operator, left, right)


def check_repeat(sequence: Any, times: Any) -> None:
    """Refuse `text * n` whose result would exceed the output cap."""
    sized = isinstance(sequence, str | list | tuple) and isinstance(times, int)
    if sized and len(sequence) * times > MAX_OUTPUT_CHARS:
        raise RenderBudgetExceeded("repetition larger than the output limit")


def check_format(text: str) -> None:
    """Refuse %-formats with huge or caller-given widths (`%0999999999d`, `%*d`)."""
    if _WIDE_FORMAT.search(text):
        raise RenderBudgetExceeded("format width or precision too large")


def _bounded_format(value: Any, *args: Any, **kwargs: Any) -> str:
    text = str(value)
    check_format(text)
    return text % (kwargs or args)


def _bounded_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    hits = text.count(str(old)) if count is None else min(count, text.count(str(old)))
    if len(text) + hits * len(str(new)) > MAX_OUTPUT_CHARS:
        raise RenderBudgetExceeded("replace result larger than the output limit")
    return text.replace(str(old), str(new), -1 if count is None else count)


def _bounded_join(join: Callable[..., str]) -> Callable[..., str]:
    @pass_eval_context
    def bounded(eval_ctx: EvalContext, value: Any, d: str = "", attribute: Any = None) -> str:
        items = list(value)
        if len(str(d)) * len(items) > MAX_OUTPUT_CHARS:
            raise RenderBudgetExceeded("join result larger than the output limit")
        return join(eval_ctx, items, d, attribute)

    return bounded


def make_environment(finalize: Callable[[Any], Any] | None) -> BoundedSandbox:
    """A fresh bounded sandbox; ``finalize`` escapes each `{{ }}` value for its target."""
    env = BoundedSandbox(undefined=StrictUndefined, finalize=finalize, autoescape=False)
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    env.filters["format"] = _bounded_format
    env.filters["replace"] = _bounded_replace
    env.filters["join"] = _bounded_join(env.filters["join"])
    for name in ("namespace", "lipsum"):
        env.globals.pop(name, None)
    return env


def run_bounded(render: Callable[[], Iterator[str]], what: str) -> str:
    """Join the chunks of ``render()`` within the time and size budget."""
    deadline = time.monotonic() + MAX_RENDER_S

    def check(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise RenderBudgetExceeded(f"{what} took longer than {MAX_RENDER_S}s to render")
        return check

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        # Only template code is traced line by line; library frames stay untraced (cheap).
        if frame.f_code.co_filename == TEMPLATE_FILENAME:
            return check(frame, event, arg)
        return None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        parts: list[str] = []
        size = 0
        for chunk in render():
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise RenderBudgetExceeded(f"{what} is longer than {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
        return "".join(parts)
    finally:
        sys.settrace(previous)


def call_bounded(evaluate: Callable[[], Any], what: str) -> Any:
    """Evaluate one expression within the time budget (typed JSON leaves)."""
    result: list[Any] = []

    def chunks() -> Iterator[str]:
        result.append(evaluate())
        yield ""

    run_bounded(chunks, what)
    return result[0]
