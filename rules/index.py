"""RuleIndex: find the rules an event can match without trying them all.

Two levels.  First the event's (chain_id, registry, event_type): each rule sits in the
bucket of every combination its `on` allows, with None standing for "any" in a dimension
the rule leaves open; an event's merged candidate list is built once per distinct triple
and cached.  Then, inside a merged bucket, rules whose top-level `where` requires a field
to equal one of a few values (`agent_id: 42`) are filed under those values, so ten
thousand rules that differ by agent_id cost one dict lookup.  Candidates are then checked
with the rule's full predicate, in load order.

The index changes one rule at a time (``put``, ``remove``) without being rebuilt: a
rule's entry is added to or taken out of the buckets that hold its `on` combinations, in
place.  Only a rule bringing an `on` combination no other rule has drops the buckets that
combination changes which combinations feed some buckets: each of those is derived from
the bucket it replaces (a copy with the rule added), so a change costs the size of the
buckets it touches, never a rebuild from every rule.  Apply changes between lookups,
never during one: the index is not safe to change from another thread.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from rules.fields import EVENT_FIELDS, ON_KEYS, fold_hex
from rules.gc_pause import gc_paused
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

    def add(self, entry: _Entry) -> None:
        """File one more rule, at its place in load order."""
        order, rule, _predicate = entry
        key = rule.index_key
        if key is None:
            bisect.insort(self.unkeyed, entry, key=_order)
            return
        tables = dict(self.keyed)
        table = tables.get(key)
        if table is None:
            table = tables[key] = {}
            self.keyed = tuple(tables.items())
        for value in rule.index_values:
            bisect.insort(table.setdefault(value, []), (order, rule, rule.residual), key=_order)

    def copy(self) -> _Bucket:
        """An independent bucket with the same rules (add and discard change lists in place)."""
        twin = _Bucket([])
        twin.unkeyed = list(self.unkeyed)
        twin.keyed = tuple(
            (field, {value: list(hits) for value, hits in table.items()})
            for field, table in self.keyed
        )
        return twin

    def discard(self, order: int, rule: Rule) -> None:
        """Take out the rule filed at ``order`` (a no-op if it is not here)."""
        key = rule.index_key
        if key is None:
            _remove_at(self.unkeyed, order)
            return
        table = dict(self.keyed).get(key)
        if table is None:
            return
        for value in rule.index_values:
            hits = table.get(value)
            if hits is not None:
                _remove_at(hits, order)
                if not hits:
                    del table[value]

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


def _remove_at(entries: list[_Entry], order: int) -> None:
    at = bisect.bisect_left(entries, order, key=_order)
    if at < len(entries) and entries[at][0] == order:
        del entries[at]


def _combinations(rule: Rule) -> list[tuple[Any, Any, Any]]:
    """The `on` index keys of ``rule``: one per combination, None where `on` is open."""
    options = [list(rule.on[key]) if key in rule.on else [None] for key in ON_KEYS]
    return list(itertools.product(*options))


def _feeds(key: tuple[Any, Any, Any], triple: tuple[Any, Any, Any]) -> bool:
    """Whether rules filed under ``key`` can match events of ``triple``."""
    return all(k is None or k == t for k, t in zip(key, triple, strict=True))


class RuleIndex:
    """Enabled rules indexed for fast matching; changed one rule at a time."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        with gc_paused():
            self._build(rules)

    def _build(self, rules: Iterable[Rule]) -> None:
        # id -> (load order, rule): the enabled rules.  A replaced rule keeps its order.
        self._by_id: dict[str, tuple[int, Rule]] = {}
        self._next_order = 0
        self._by_on: dict[tuple[Any, Any, Any], list[_Entry]] = {}
        for rule in rules:
            if not rule.enabled or rule.id in self._by_id:
                continue
            order = self._take_order(rule.id)
            self._by_id[rule.id] = (order, rule)
            for combination in _combinations(rule):
                self._by_on.setdefault(combination, []).append((order, rule, rule.predicate))
        self._buckets: dict[tuple[Any, Any, Any], _Bucket] = {}
        # Merged buckets by the `on` combinations that feed them: events of chains no
        # rule names share one bucket instead of building an identical one per chain.
        self._merged: dict[tuple[tuple[Any, Any, Any], ...], _Bucket] = {}
        # How many rules read each event column, and how many read them all.
        self._field_uses: Counter[str] = Counter()
        self._all_fields_rules = 0
        self._absence_rules: dict[str, Rule] = {}
        for _, rule in self._by_id.values():
            self._count_fields(rule, 1)
        self._warm()

    def _take_order(self, _rule_id: str) -> int:
        order = self._next_order
        self._next_order += 1
        return order

    def _count_fields(self, rule: Rule, sign: int) -> None:
        # Every rule in and out passes here: the absence rules are kept up to date with it.
        if rule.absence is not None:
            if sign > 0:
                self._absence_rules[rule.id] = rule
            else:
                self._absence_rules.pop(rule.id, None)
        if rule.event_fields is None:
            self._all_fields_rules += sign
        else:
            self._field_uses.update({name: sign for name in rule.event_fields})

    def put(self, rule: Rule) -> None:
        """Add ``rule``, or replace the rule of the same id (keeping its place in load
        order).  A disabled rule is removed."""
        known = self._by_id.get(rule.id)
        if known is not None:
            self._discard(*known)
        if not rule.enabled:
            self._by_id.pop(rule.id, None)
            return
        order = known[0] if known is not None else self._take_order(rule.id)
        self._by_id[rule.id] = (order, rule)
        self._count_fields(rule, 1)
        entry: _Entry = (order, rule, rule.predicate)
        new_keys = []
        for combination in _combinations(rule):
            entries = self._by_on.get(combination)
            if entries is None:
                new_keys.append(combination)
                self._by_on[combination] = [entry]
            else:
                bisect.insort(entries, entry, key=_order)
        combinations = set(_combinations(rule))
        for feeding, bucket in self._merged.items():
            if combinations.intersection(feeding):
                bucket.add(entry)
        # After the in-place adds: the buckets derived here start from ones holding the rule.
        if new_keys:
            self._refile_for_new_keys(new_keys, entry, combinations)

    def remove(self, rule_id: str) -> bool:
        """Take out the rule ``rule_id``; whether it was there."""
        known = self._by_id.pop(rule_id, None)
        if known is None:
            return False
        self._discard(*known)
        return True

    def _discard(self, order: int, rule: Rule) -> None:
        self._count_fields(rule, -1)
        combinations = set(_combinations(rule))
        for combination in combinations:
            entries = self._by_on.get(combination)
            if entries is not None:
                # An emptied key stays: the feeding tuples of cached buckets name it.
                _remove_at(entries, order)
        for feeding, bucket in self._merged.items():
            if combinations.intersection(feeding):
                bucket.discard(order, rule)

    def _refile_for_new_keys(
        self,
        new_keys: list[tuple[Any, Any, Any]],
        entry: _Entry,
        combinations: set[tuple[Any, Any, Any]],
    ) -> None:
        """A rule brought `on` combinations no other rule has: the triples they feed now
        have one more feeding key.  Each such triple's bucket is the bucket of its former
        feeding keys plus the rule (a copy: other triples may share the former bucket),
        and the triples of a new chain or event kind are warmed the same way."""
        fresh = set(new_keys)
        touched = [t for t in self._buckets if any(_feeds(k, t) for k in new_keys)]
        touched += [t for t in self._warm_triples() if t not in self._buckets]
        for triple in touched:
            feeding = self._feeding(triple)
            bucket = self._merged.get(feeding)
            if bucket is None:
                former = tuple(key for key in feeding if key not in fresh)
                base = self._merged.get(former) if former else _Bucket([])
                if base is None:
                    self._build_bucket(triple)
                    continue
                bucket = base.copy()
                if combinations.intersection(feeding) and not combinations.intersection(former):
                    bucket.add(entry)
                self._cache_merged(feeding, bucket)
            self._cache_triple(triple, bucket)
        # Buckets no triple uses any more would only cost every later put and remove.
        used = {id(bucket) for bucket in self._buckets.values()}
        for feeding in [f for f, b in self._merged.items() if id(b) not in used]:
            del self._merged[feeding]

    def _warm(self) -> None:
        """Build at load time the buckets events will need, not on the first events.

        With 100k rules a bucket costs tens of milliseconds; built lazily, that landed on
        the first events after every (re)load.  Chains that no rule names all share the
        bucket warmed with the ``_UNNAMED_CHAIN`` stand-in.
        """
        for triple in self._warm_triples():
            self._build_bucket(triple)

    def _warm_triples(self) -> list[tuple[Any, Any, Any]]:
        """Every named chain (and the stand-in) with every named (registry, event_type)."""
        chains = {key[0] for key in self._by_on} | {_UNNAMED_CHAIN}
        kinds = {key[1:] for key in self._by_on if None not in key[1:]}
        return [(chain, *kind) for chain in chains for kind in kinds]

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._by_id

    def get(self, rule_id: str) -> Rule | None:
        """The enabled rule ``rule_id``, or None."""
        known = self._by_id.get(rule_id)
        return None if known is None else known[1]

    @property
    def event_fields(self) -> tuple[str, ...] | None:
        """The event columns some rule reads, in table order; None when one needs all.

        The evaluator reads only these (reading and converting the 32 columns was a fifth
        of evaluating a batch), so a column no rule names costs nothing.
        """
        if self._all_fields_rules:
            return None
        return tuple(name for name in EVENT_FIELDS if name in ON_KEYS or self._field_uses[name] > 0)

    @property
    def absence_rules(self) -> Mapping[str, Rule]:
        """The enabled rules with `when.absent` by id (a live view: do not keep it across
        a change of the index)."""
        return self._absence_rules

    @property
    def rules(self) -> list[Rule]:
        """The enabled rules, in load order."""
        return [rule for _, rule in sorted(self._by_id.values(), key=_order_of_known)]

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

    def _feeding(self, triple: tuple[Any, Any, Any]) -> tuple[tuple[Any, Any, Any], ...]:
        """The `on` keys whose rules can match events of ``triple``, in a fixed order."""
        return tuple(
            key
            for key in itertools.product((triple[0], None), (triple[1], None), (triple[2], None))
            if key in self._by_on
        )

    def _build_bucket(self, triple: tuple[Any, Any, Any]) -> _Bucket:
        feeding = self._feeding(triple)
        bucket = self._merged.get(feeding)
        if bucket is None:
            entries = [entry for key in feeding for entry in self._by_on[key]]
            # A rule appears once per triple: each `on` dimension is open or concrete.
            bucket = _Bucket(sorted(set(entries), key=_order))
            self._cache_merged(feeding, bucket)
        self._cache_triple(triple, bucket)
        return bucket

    def _cache_merged(self, feeding: tuple[tuple[Any, Any, Any], ...], bucket: _Bucket) -> None:
        if len(self._merged) >= MAX_CACHED_TRIPLES:
            # Both at once: put and remove keep up to date only the merged buckets.
            self._merged.clear()
            self._buckets.clear()
        self._merged[feeding] = bucket

    def _cache_triple(self, triple: tuple[Any, Any, Any], bucket: _Bucket) -> None:
        if len(self._buckets) >= MAX_CACHED_TRIPLES:
            self._buckets.clear()  # a flood of odd triples: rebuild rather than grow
        self._buckets[triple] = bucket


def _order_of_known(known: tuple[int, Rule]) -> int:
    return known[0]
