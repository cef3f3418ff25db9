"""The exception tree of rules/errors.py is complete and true: every exception class of
our packages is drawn there, derives from EngineError, and sits under the parent drawn."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import rules.errors
from rules.errors import EngineError

PACKAGES = ("engine", "actions", "rules", "devkit", "sql")
# Raised and caught inside the engine to steer control flow (a batch evaluated again with
# the INSERT, an oversized body, the RQ fast path turned off); never seen by a user.
PRIVATE_CONTROL_FLOW = {
    "EventWrittenTwice",
    "_TooBig",
    "UnverifiedRQError",
}
# An entry: its name at the start of the line or right after a branch; other lines of
# the drawing continue the description of the entry above them.
_DRAWN = re.compile(r"^(?P<indent>(?:[│ ]   )*[├└]── )?(?P<name>[A-Z]\w+)\b")


def _modules() -> list[ModuleType]:
    found = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue  # running it is what importing it does
            found.append(importlib.import_module(info.name))
    return found


def _exception_classes() -> dict[str, type[BaseException]]:
    classes: dict[str, type[BaseException]] = {}
    for module in _modules():
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                classes[value.__name__] = value
    return classes


def _drawn_parents() -> dict[str, str | None]:
    """Class name -> the name drawn as its parent (None for the root)."""
    doc = rules.errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) along the current path
    in_drawing = False
    for raw in doc.splitlines():
        line = raw[4:] if raw.startswith("    ") else None
        if line is None or not line.strip():
            if in_drawing and not raw.strip():
                break
            continue
        match = _DRAWN.match(line)
        if match is None:
            continue
        in_drawing = True
        column = len(match.group("indent") or "")
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match.group("name")] = stack[-1][1] if stack else None
        stack.append((column, match.group("name")))
    return parents


def _tree_parent(cls: type[BaseException]) -> type[BaseException]:
    """The nearest ancestor of ``cls`` on the tree (EngineError or below)."""
    for base in cls.__mro__[1:]:
        if issubclass(base, EngineError):
            return base
    raise AssertionError(f"{cls.__name__} does not derive from EngineError")


def test_the_drawing_parses_as_a_tree_rooted_at_engine_error() -> None:
    parents = _drawn_parents()
    assert parents["EngineError"] is None
    assert parents["ConfigError"] == "EngineError"
    assert parents["AddressRefused"] == "PermanentActionError"
    assert [name for name, parent in parents.items() if parent is None] == ["EngineError"]


def test_every_exception_class_is_drawn_under_its_real_parent() -> None:
    classes = _exception_classes()
    drawn = _drawn_parents()
    assert "EngineError" in classes and "AddressRefused" in classes  # the walk found them
    for name, cls in sorted(classes.items()):
        if name in PRIVATE_CONTROL_FLOW:
            continue
        assert issubclass(cls, EngineError), f"{cls.__module__}.{name} is not an EngineError"
        assert name in drawn, f"{cls.__module__}.{name} is missing from rules/errors.py's tree"
        if cls is not EngineError:
            assert drawn[name] == _tree_parent(cls).__name__, (
                f"{name} is drawn under {drawn[name]}, derives from {_tree_parent(cls).__name__}"
            )


def test_every_drawn_class_exists() -> None:
    classes = _exception_classes()
    missing = sorted(set(_drawn_parents()) - set(classes))
    assert not missing, f"drawn in rules/errors.py but defined nowhere: {missing}"


def test_private_control_flow_exceptions_still_exist() -> None:
    """The exemption list must not outlive the classes it exempts."""
    assert set(_exception_classes()) >= PRIVATE_CONTROL_FLOW
