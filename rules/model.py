"""The compiled, immutable rule and the values the engine exchanges with it.

A Rule is built only by the loader (rules.compile).  Its evaluation methods are pure and
never raise on hostile event rows: a value that cannot be compared simply does not match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rules.fields import fold_hex
from rules.labels import NO_LABELS

if TYPE_CHECKING:
    from rules.absence import Absence
    from rules.grouping import GroupSpec, ResolveSpec
    from rules.matchers import Predicate
    from rules.stateful import StateMachine


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the worker retries one action: exponential backoff with jitter."""

    attempts: int = 5  # total attempts, the first included
    backoff_s: float = 2.0
    max_backoff_s: float = 600.0


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One action of a rule; ``raw`` is the mapping under the kind key, ``${VAR}`` unexpanded."""

    index: int
    kind: str
    name: str | None
    raw: Mapping[str, Any]
    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one event for one group of a rule."""

    fired: bool
    suppressed: bool
    state: dict[str, Any] | None
    template_state: dict[str, Any]


@dataclass(frozen=True)
class RenderExpectation:
    """A `renders` item of a rule test: the n-th firing's action output contains strings
    (with ``resolve``: the n-th resolved notice's, ``action`` one of `resolve.actions`)."""

    firing: int
    action: int
    contains: tuple[str, ...]
    resolve: bool = False


@dataclass(frozen=True)
class Advance:
    """An `{advance: DURATION}` step of a rule test: the clock moves on without an event."""

    seconds: int
    now: int  # the test's time after it: the last event's timestamp plus the advances


@dataclass(frozen=True)
class RuleTest:
    """One `tests:` item, with events already completed (defaults and timestamps); its
    steps are events and Advance steps, in the order written."""

    name: str
    events: tuple[Mapping[str, Any] | Advance, ...]
    fires: tuple[int, ...]
    renders: tuple[RenderExpectation, ...]
    line: int
    # The steps at which resolved notices are sent, and how many digests the test sends
    # (rules.notice_replay); None: not asserted.
    resolves: tuple[int, ...] | None = None
    digests: int | None = None


_UNHASHABLE = object()


def on_value(value: Any) -> Any:
    """An event value as the `on` index compares it: bools and unhashables match nothing."""
    if value is None or type(value) in (int, str):
        return value
    if isinstance(value, bool):
        return _UNHASHABLE
    try:
        hash(value)
    except TypeError:
        return _UNHASHABLE
    return value


# Built once: json.dumps with these options makes a new encoder per call, a fifth of the
# cost of the small documents compiling a rule serializes.  encode() keeps no state.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
)
_DOCUMENT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """Sorted, compact JSON: equal values give equal text (hashes, group keys)."""
    return _CANONICAL.encode(value)


def document_json(value: Any) -> str:
    """Compact JSON in the document's own key order (how a Rule keeps its document)."""
    return _DOCUMENT.encode(value)


@dataclass(frozen=True, eq=False, slots=True)
class Rule:
    """A compiled rule.  Equality is identity: two loads give two distinct rules.

    Rules are numerous (100,000 in the bench), so a Rule holds only what evaluation needs:
    its compiled parts are shared with equal rules of the same load, and the document as
    written is kept as its JSON text (``document`` parses it when asked).
    """

    id: str
    description: str | None
    owner: str | None
    enabled: bool
    on: Mapping[str, frozenset[Any]]
    per: tuple[str, ...]
    actions: tuple[ActionSpec, ...]
    source_file: str
    source_line: int
    document_json: str
    content_hash: str
    logic_hash: str
    stateful: bool
    tests: tuple[RuleTest, ...] = ()
    index_key: str | None = field(default=None, repr=False)
    index_values: frozenset[Any] = field(default_factory=frozenset, repr=False)
    residual: Predicate | None = field(default=None, repr=False)
    predicate: Predicate | None = field(default=None, repr=False)
    machine: StateMachine | None = field(default=None, repr=False)
    # The event columns a firing's stored context keeps (None: all); see build_context.
    context_fields: tuple[str, ...] | None = field(default=None, repr=False)
    # Every event column the rule reads (None: all); the evaluator reads no other.
    event_fields: tuple[str, ...] | None = field(default=None, repr=False)
    # The organization a tenant's rule belongs to; None for the operator's file rules.
    org_id: int | None = None
    # `group` (its firings become digests) and `resolve` (rules.grouping).
    grouping: GroupSpec | None = field(default=None, repr=False)
    resolve: ResolveSpec | None = field(default=None, repr=False)
    # What to send when an event this rule fired on is removed by a reorg (on_retract);
    # their ``index`` is negative (-1 for the first), apart from the firing's own actions.
    on_retract: tuple[ActionSpec, ...] = ()
    # `labels:` (rules.labels): for templates and silence matchers, never for evaluation.
    labels: Mapping[str, str] = field(default_factory=lambda: NO_LABELS, repr=False)
    # `when: {absent: …}`: fires on time passing (rules.absence), never on an event.
    absence: Absence | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Rule(id={self.id!r}, source={self.source_file}:{self.source_line})"

    @property
    def document(self) -> dict[str, Any]:
        """The rule's mapping as written (``${VAR}`` unexpanded), a fresh copy each time."""
        document: dict[str, Any] = json.loads(self.document_json)
        return document

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether `on` and `where` hold for ``event``; never raises."""
        try:
            for key, allowed in self.on.items():
                if on_value(event.get(key)) not in allowed:
                    return False
            return self.predicate is None or self.predicate(event)
        except Exception:  # a hostile row must cost a non-match, never the engine
            return False

    def group_values(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The `per` values of ``event`` (hex folded so case does not split groups)."""
        return {name: _json_safe(fold_hex(event.get(name))) for name in self.per}

    def group_key(self, event: Mapping[str, Any]) -> str:
        """A stable string naming the group: canonical JSON of the per values, "" without per."""
        if not self.per:
            return ""
        return canonical_json([_json_safe(fold_hex(event.get(name))) for name in self.per])

    def step(
        self,
        event: Mapping[str, Any],
        state: Mapping[str, Any] | None,
        *,
        trusted_until: int | None = None,
    ) -> Step:
        """Apply `when` then `throttle` for one matching event; pure, never mutates ``state``.

        A stateless rule always fires; an absence rule never does (time fires it).
        ``state`` None means a fresh group.  An event whose
        `timestamp` is later than ``trusted_until`` (the caller's clock plus its allowed
        skew; None trusts every time) advances no time-based state (rules.stateful).
        """
        if self.machine is None:
            return Step(fired=self.absence is None, suppressed=False, state=None, template_state={})
        return self.machine.step(event, state, trusted_until)


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    from rules.fields import as_json_number  # local: keeps the hot path above import-free

    number = as_json_number(value)
    return number if number is not None else str(value)
