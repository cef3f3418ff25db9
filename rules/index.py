"""RuleIndex: find the rules an event can match without trying them all.

Two levels.  First the event's (chain_id, registry, event_type): each rule sits in the
bucket of every combination its `on` allows, with None standing for "any" in a dimension
the rule leaves open; an event's merged candidate list is built once per distinct triple
and cached.  Then, inside a merged bucket, rules whose top-level `where` requires a field
to equal one of a few values (`agent_id: 42`) are filed under those values, so ten
thousand rules that differ by agent_id cost one dict lookup.  Candidates are then checked
with the rule's full predicate, in load order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Final

from rules.fields import EVENT_FIELDS, ON_KEYS, fold_hex
from rules.matchers import Predicate
from rules.model import Rule, on_value

#: Distinct (chain, registry, event_type) triples cached; hostile input cannot grow it past.
MAX_CACHED_TRIPLES: Final = 4096

_Entry = tuple[int, Rule, "Predicate | None"]
_UNNAMED_CHAIN: Final = object()  # stands for every chain id that no rule's `on` names


class _Bucket:
    """The rules that can match one (chain, registry, event_type), sub-indexed by equality."""

    __slots__ = ("keyed", "unkeyed")

    def __init__(self, entries: list[_Entry]) -> None:
        self.unkeyed: list[_Entry] = []
        tables: dict[str, dict[Any, list[_Entry]]] = {}
        for order, rule, predicate in entries:
            key = rule.index_key
            if key is None:
                self.unkeyed.append((order, rule, predicate))
                continue
            # Found through its key, a rule needs only the rest of its `where` checked.
            table = tables.setdefault(key, {})
            for value in rule.index_values:
                table.setdefault(value, []).append((order, rule, rule.residual))
        self.keyed: tuple[tuple[str, dict[Any, list[_Entry]]], ...] = tuple(tables.items())

    def match(self, event: Mapping[str, Any]) -> list[Rule]:
        """Rules of this bucket whose `where` holds, in load order."""
        found: list[_Entry] | None = None
        several = False
        for field, table in self.keyed:
            value = event.get(field)
            if value is None or value.__class__ is bool:  # True would hash like 1
                continue
            try:
                hits = table.get(fold_hex(value))
            except TypeError:  # unhashable (a list in a hostile row): matches no equality
                continue
            if hits:
                if found is None:
                    found = hits
                else:
                    found = [*found, *hits]
                    several = True
        if self.unkeyed:
            if found is None:
                found = self.unkeyed
            else:
                found = [*found, *self.unkeyed]
                several = True
        if found is None:
            return []
        if several:
            found = sorted(found, key=_order)
        try:
            # The bucket already guarantees `on`; only `where` is left to check.
            return [rule for _, rule, where in found if where is None or where(event)]
        except Exception:  # a hostile row: fall back to the rule-by-rule never-raising check
            return [rule for _, rule, _where in found if rule.matches(event)]


def _order(entry: _Entry) -> int:
    return entry[0]


class RuleIndex:
    """Enabled rules indexed for fast matching; immutable once built."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._rules = [rule for rule in rules if rule.enabled]
        self._by_on: dict[tuple[Any, Any, Any], list[_Entry]] = {}
        for order, rule in enumerate(self._rules):
            options = [list(rule.on[key]) if key in rule.on else [None] for key in ON_KEYS]
            for combination in itertools.product(*options):
                entry = (order, rule, rule.predicate)
                self._by_on.setdefault(combination, []).append(entry)
        self._buckets: dict[tuple[Any, Any, Any], _Bucket] = {}
        # Merged buckets by the `on` combinations that feed them: events of chains no
        # rule names share one bucket instead of building an identical one per chain.
        self._merged: dict[tuple[tuple[Any, Any, Any], ...], _Bucket] = {}
        self._warm()
        self._event_fields = self._columns()

    def _warm(self) -> None:
        """Build at load time the buckets events will need, not on the first events.

        With 100k rules a bucket costs tens of milliseconds; built lazily, that landed on
        the first events after every (re)load.  Chains that no rule names all share the
        bucket warmed with the ``_UNNAMED_CHAIN`` stand-in.
        """
        chains = {key[0] for key in self._by_on} | {_UNNAMED_CHAIN}
        kinds = {key[1:] for key in self._by_on if None not in key[1:]}
        for chain in chains:
            for registry, event_type in kinds:
                self._build_bucket((chain, registry, event_type))

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def event_fields(self) -> tuple[str, ...] | None:
        """The event columns some rule reads, in table order; None when one needs all.

        The evaluator reads only these (reading and converting the 32 columns was a fifth
        of evaluating a batch), so a column no rule names costs nothing.
        """
        return self._event_fields

    def _columns(self) -> tuple[str, ...] | None:
        wanted: set[str] = set(ON_KEYS)
        for rule in self._rules:
            if rule.event_fields is None:
                return None
            wanted.update(rule.event_fields)
        return tuple(name for name in EVENT_FIELDS if name in wanted)

    @property
    def rules(self) -> list[Rule]:
        """The enabled rules, in load order."""
        return list(self._rules)

    def matching(self, event: Mapping[str, Any]) -> list[Rule]:
        """The rules whose `on` and `where` hold for ``event``, in load order; never raises."""
        triple = (
            on_value(event.get("chain_id")),
            on_value(event.get("registry")),
            on_value(event.get("event_type")),
        )
        bucket = self._buckets.get(triple)
        if bucket is None:
            bucket = self._build_bucket(triple)
        return bucket.match(event)

    def _build_bucket(self, triple: tuple[Any, Any, Any]) -> _Bucket:
        feeding = tuple(
            key
            for key in itertools.product((triple[0], None), (triple[1], None), (triple[2], None))
            if key in self._by_on
        )
        bucket = self._merged.get(feeding)
        if bucket is None:
            entries = [entry for key in feeding for entry in self._by_on[key]]
            # A rule appears once per triple: each `on` dimension is open or concrete.
            bucket = _Bucket(sorted(set(entries), key=_order))
            if len(self._merged) >= MAX_CACHED_TRIPLES:
                self._merged.clear()
            self._merged[feeding] = bucket
        if len(self._buckets) >= MAX_CACHED_TRIPLES:
            self._buckets.clear()  # a flood of odd triples: rebuild rather than grow
        self._buckets[triple] = bucket
        return bucket
