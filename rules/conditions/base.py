"""What every stateful condition shares: the Condition protocol, thresholds, event values.

A condition's state is a small JSON object owned by that condition.  ``update`` must be
pure (return a new dict, never mutate the one given) and must tolerate a state it did not
write (a corrupted row, an older layout): it then starts afresh instead of raising.
"""

from __future__ import annotations

import bisect
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from rules.fields import as_json_number
from rules.reporting import Problems
from rules.shapes import number, one_of

#: Count windows and aggregate samples keep at most this many entries per group; past it
#: the oldest entries are dropped (a count saturates, an aggregate covers the newest ones).
MAX_WINDOW_ENTRIES: Final = 10_000

THRESHOLDS: Final = ("below", "above", "at_most", "at_least")
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "below": operator.lt,
    "above": operator.gt,
    "at_most": operator.le,
    "at_least": operator.ge,
}


@dataclass(frozen=True)
class Outcome:
    """One condition after one event: whether it holds, its new state, its template value."""

    holds: bool
    state: dict[str, Any]
    value: Any


class Condition(Protocol):
    """A compiled stateful condition."""

    @property
    def key(self) -> str:
        """Its name in the rule state and in the template `state` (ema, count, …)."""

    def update(
        self, event: Mapping[str, Any], state: Any, now: int | None, latest: int | None = None
    ) -> Outcome:
        """Fold ``event`` into ``state``.

        ``now`` is the event's time, None when it is unknown or not trusted (then no
        time-based state may advance).  ``latest`` is the trust ceiling: stored times
        after it are forgotten (None: no ceiling).
        """

    def after_fire(self, state: dict[str, Any]) -> dict[str, Any]:
        """The state once the rule has fired (count's reset_on_fire); usually unchanged."""


@dataclass(frozen=True)
class Threshold:
    """`below: 60` and friends: compares an aggregate with a fixed number."""

    name: str
    limit: float | int

    def holds(self, value: float | int | None) -> bool:
        """Whether ``value`` (None = no value yet) satisfies the threshold."""
        return value is not None and _COMPARE[self.name](value, self.limit)


def compile_threshold(
    spec: Mapping[str, Any], sink: Problems, path: tuple[Any, ...]
) -> Threshold | None:
    """The one of below/above/at_most/at_least in ``spec``."""
    name = one_of(spec, THRESHOLDS, sink, path)
    if name is None:
        return None
    limit = number(spec, name, sink, path)
    return None if limit is None else Threshold(name, limit)


def event_time(event: Mapping[str, Any]) -> int | None:
    """The event's `timestamp` (block time, unix seconds) or None when unusable."""
    number_ = as_json_number(event.get("timestamp"))
    return None if number_ is None else int(number_)


def numeric_value(event: Mapping[str, Any], field: str) -> int | float | None:
    """The number in ``field`` or None (null, text, NaN …: the condition does not update)."""
    return as_json_number(event.get(field))


def scalar_value(event: Mapping[str, Any], field: str) -> str | int | float | bool | None:
    """A JSON scalar from ``field`` (hex folded) or None when null or not a scalar."""
    value = event.get(field)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() if value[:2] in ("0x", "0X") else value
    return as_json_number(value)


def value_key(value: str | int | float | bool) -> str:
    """A type-aware identity for remembering values (1, 1.0, "1" and true stay distinct)."""
    return json.dumps(value, ensure_ascii=False)


def state_dict(state: Any) -> dict[str, Any]:
    """The state as a fresh dict; anything that is not a mapping counts as empty."""
    return dict(state) if isinstance(state, Mapping) else {}


def slide_window(
    times: list[Any],
    values: list[Any] | None,
    now: int,
    horizon: int,
    value: Any = None,
    latest: int | None = None,
) -> tuple[list[Any], list[Any] | None, int]:
    """Drop entries at or before ``horizon`` or after ``latest``, insert (now, value), cap.

    Returns the new lists and how many of their entries lie in (horizon, now]: an entry
    later than ``now`` (an out-of-order stream) is kept for the events still to come but
    not counted for this one.  ``latest`` is the trust ceiling (rules.stateful): a stored
    time beyond it cannot have been recorded under the current clock, so it is forgotten.

    ``times`` is kept sorted, so pruning is a binary search plus one C-level slice rather
    than a Python loop over a window of up to MAX_WINDOW_ENTRIES.  Past the cap the
    entries with the oldest times are dropped.  New lists are returned (purity); a stored
    list holding something other than numbers raises TypeError, which callers treat as a
    corrupted state.
    """
    start = bisect.bisect_right(times, horizon)
    end = len(times)
    if latest is not None and times and times[-1] > latest:
        end = max(start, bisect.bisect_right(times, latest))
    kept = times[start:end]
    at = bisect.bisect_right(kept, now)
    kept.insert(at, now)
    kept_values = None
    if values is not None:
        kept_values = values[start:end]
        kept_values.insert(at, value)
    in_window = at + 1
    if len(kept) > MAX_WINDOW_ENTRIES:
        excess = len(kept) - MAX_WINDOW_ENTRIES
        del kept[:excess]
        if kept_values is not None:
            del kept_values[:excess]
        in_window = max(0, in_window - excess)
    return kept, kept_values, in_window


def stored_list(state: Any, key: str) -> list[Any]:
    """The list stored under ``key`` (no copy), or an empty one."""
    value = state.get(key) if isinstance(state, Mapping) else None
    return value if isinstance(value, list) else []


def int_list(value: Any) -> list[int]:
    """A list of ints from stored state, dropping anything else (corruption-tolerant)."""
    if not isinstance(value, list):
        return []
    return [v for v in value if type(v) is int]
