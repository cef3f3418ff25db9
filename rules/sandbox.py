"""The Jinja2 sandbox templates run in, with bounds on the work one render may do.

Rule authors are trusted to write rules, not to run code: templates run in an immutable
sandbox (no attribute of the `__class__.__mro__` kind, no mutation of the context), and
with limits so a template cannot hang or exhaust memory:

- ``range()`` is Jinja's safe range (at most 100,000 items) and ``namespace``/``lipsum``
  are removed (they let loops accumulate or produce unbounded text);
- ``*``, ``**``, ``+``, ``%``, ``~`` and joins of output are intercepted so `"a" * 10**9`,
  `10 ** 10 ** 10`, `((10**256)**256)**256`, `"%(x)999999999s" % …` and a macro doubling
  its text are refused before they allocate, by the size of their result;
- string methods and filters that pad, multiply or pad out text or lists by a caller-given
  number are removed or bounded (`batch`, `slice`, `tojson(indent=…)`, `sum(start=[])`);
- every render has a wall-clock budget, enforced by a trace hook on template frames only
  (so nested loops are stopped), and every rendered field is capped at MAX_OUTPUT_CHARS;
- compiling a template evaluates nothing: Jinja folds constant expressions at compile time
  (its optimizer, and its constant output), which would run a rule author's expression
  while a rule file loads, outside every budget.

These are the first line only: work done inside one C call (a builtin, a filter) escapes
the trace hook, so workers render in a separate, resource-limited process
(actions.render_jail) whose budget holds whatever the template does.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any, Final

from jinja2 import StrictUndefined, nodes, pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rules.errors import EngineError

MAX_OUTPUT_CHARS: Final = 64 * 1024
MAX_RENDER_S: Final = 0.5
MAX_EXPONENT: Final = 256
#: Integers a template computes stay below this many bits (about 20,000 decimal digits).
MAX_INT_BITS: Final = 65536
#: `batch`/`slice` sizes, `tojson` indents: beyond these they only pad or multiply.
MAX_GROUPS: Final = 10_000
MAX_JSON_INDENT: Final = 16
TEMPLATE_FILENAME: Final = "<template>"

# str methods that allocate in proportion to an argument rather than to their input.
_AMPLIFYING_METHODS: Final = frozenset(
    {"ljust", "rjust", "center", "zfill", "expandtabs", "format", "format_map", "replace", "join"}
)
# Filters removed: padding by width, randomness (tests must be deterministic), pprint.
_REMOVED_FILTERS: Final = ("center", "indent", "wordwrap", "random", "pprint", "xmlattr")
# A conversion spec: `%`, an optional `(name)`, flags, then a width or precision of 4+ digits
# or `*` (caller-given); `%(x)999999999s` as much as `%0999999999d`.
_WIDE_FORMAT: Final = re.compile(r"%(?:\([^)]*\))?[^a-zA-Z%(]*?(\d{4,}|\*)")


class RenderBudgetExceeded(SecurityError, EngineError):
    """A template used more time or produced more text than one render may."""


class _NonFoldingCodeGenerator(CodeGenerator):
    """Compiles without evaluating anything: no constant folding, no constant output."""

    def __init__(self, environment: Environment, *args: Any, **kwargs: Any) -> None:
        super().__init__(environment, *args, **kwargs)
        self.optimizer = None  # folding runs filters and operators on constants at load

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        # Jinja turns a constant `{{ … }}` into text at compile time; only literal text may.
        if isinstance(node, nodes.TemplateData):
            return super()._output_child_to_const(node, frame, finalize)
        raise nodes.Impossible()


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose arithmetic and string operations are size-bounded."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _NonFoldingCodeGenerator

    def concat(self, parts: Any) -> str:
        """Every join of a template's text, refused past the output cap: a macro's or a
        block's output (`m(m(m(x)))` doubles text without any operator) and `a ~ b`."""
        texts = [str(part) for part in parts]
        if sum(map(len, texts)) > MAX_OUTPUT_CHARS:
            raise RenderBudgetExceeded("text longer than the output limit")
        return "".join(texts)

    def _compile(self, source: str, filename: str) -> CodeType:
        # Compiled templates join macro and block output with `environment.concat`, but `~`
        # with the module global `str_join`, looked up when the template runs: rebinding
        # it last makes `~` bounded too.
        rebind = "\nstr_join = environment.concat\n"
        return super()._compile(source + rebind, filename)

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
        if operator == "**":
            check_power(left, right)
        elif operator == "*":
            check_repeat(left, right)
            check_repeat(right, left)
        elif operator == "+":
            check_concat(left, right)
        elif operator == "%" and isinstance(left, str):
            check_format(left)
        return super().call_binop(context, operator, left, right)


def check_power(base: Any, exponent: Any) -> None:
    """Refuse `a ** b` with a huge exponent or a result of more than MAX_INT_BITS bits.

    Only `**` multiplies an integer's size: `*` and `+` add sizes, so a template of
    bounded length cannot grow a number past what str() (4,300 digits) refuses anyway.
    """
    if isinstance(exponent, int | float) and abs(exponent) > MAX_EXPONENT:
        raise RenderBudgetExceeded(f"exponent {exponent} is larger than {MAX_EXPONENT}")
    sized = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if sized and (base.bit_length() - 1) * exponent > MAX_INT_BITS:
        raise RenderBudgetExceeded(f"integer result larger than {MAX_INT_BITS} bits")


def check_concat(left: Any, right: Any) -> None:
    """Refuse `a + b` on text or sequences whose result would exceed the output cap."""
    sized = (str, list, tuple)
    if (
        isinstance(left, sized)
        and isinstance(right, sized)
        and len(left) + len(right) > MAX_OUTPUT_CHARS
    ):
        raise RenderBudgetExceeded("concatenation larger than the output limit")


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


def _bounded_groups(name: str, group: Callable[..., Any]) -> Callable[..., Any]:
    """`batch`/`slice`: their size is a count of lists (or of fill values) to make."""

    def bounded(value: Any, size: Any, fill_with: Any = None) -> Any:
        if isinstance(size, int) and size > MAX_GROUPS:
            raise RenderBudgetExceeded(f"{name}({size}) is larger than {MAX_GROUPS}")
        return group(value, size, fill_with)

    return bounded


def _bounded_tojson(tojson: Callable[..., Any]) -> Callable[..., Any]:
    @pass_eval_context
    def bounded(eval_ctx: EvalContext, value: Any, indent: Any = None) -> Any:
        if isinstance(indent, int) and indent > MAX_JSON_INDENT:
            raise RenderBudgetExceeded(f"tojson indent {indent} is larger than {MAX_JSON_INDENT}")
        return tojson(eval_ctx, value, indent)

    return bounded


def _bounded_sum(total: Callable[..., Any]) -> Callable[..., Any]:
    @pass_environment
    def bounded(env: Environment, value: Any, attribute: Any = None, start: Any = 0) -> Any:
        # sum(start=[]) concatenates lists in quadratic time, all of it in one C call.
        if not isinstance(start, int | float):
            raise RenderBudgetExceeded("sum() adds numbers only (start must be a number)")
        return total(env, value, attribute, start)

    return bounded


def make_environment(finalize: Callable[[Any], Any] | None) -> BoundedSandbox:
    """A fresh bounded sandbox; ``finalize`` escapes each `{{ }}` value for its target."""
    env = BoundedSandbox(
        undefined=StrictUndefined, finalize=finalize, autoescape=False, optimized=False
    )
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    env.filters["format"] = _bounded_format
    env.filters["replace"] = _bounded_replace
    env.filters["join"] = _bounded_join(env.filters["join"])
    env.filters["batch"] = _bounded_groups("batch", env.filters["batch"])
    env.filters["slice"] = _bounded_groups("slice", env.filters["slice"])
    env.filters["tojson"] = _bounded_tojson(env.filters["tojson"])
    env.filters["sum"] = _bounded_sum(env.filters["sum"])
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
