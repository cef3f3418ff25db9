"""Realistic ERC-8004 events and rule sets for the bench.

Events: the three registries with their event types in proportions an indexer sees
(feedback dominates), thousands of agents, checksummed-looking addresses, IPFS URIs,
scores, tags and v1 feedback values.  Rules: a mixture of per-agent where rules, where-
only rules, and EMA / count rules, each posting to a webhook.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.emit import EVENT_COLUMNS

CHAINS = (8453, 84532, 1, 11155111)
#: (registry, event_type, weight)
EVENT_KINDS = (
    ("reputation", "NewFeedback", 55),
    ("reputation", "FeedbackRevoked", 3),
    ("reputation", "ResponseAppended", 4),
    ("validation", "ValidationRequest", 12),
    ("validation", "ValidationResponse", 12),
    ("identity", "Registered", 6),
    ("identity", "URIUpdated", 4),
    ("identity", "MetadataSet", 4),
)
TAGS = ("quality", "latency", "uptime", "accuracy", "price", "support")

#: The events table's columns the bench writes, in COPY order (those `engine emit` knows).
COLUMNS = tuple(EVENT_COLUMNS)


def _hex(rng: random.Random, nbytes: int) -> str:
    return "0x" + rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()


def address(n: int) -> str:
    """A stable address for number ``n`` (mixed case, like a checksummed one)."""
    raw = hashlib.sha256(f"addr-{n}".encode()).hexdigest()[:40]
    return "0x" + "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(raw))


@dataclass
class EventGenerator:
    """Deterministic stream of event rows (tuples in ``COLUMNS`` order)."""

    agents: int = 5000
    clients: int = 2000
    validators: int = 50
    seed: int = 8004
    prefix: str = "b"

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.block = 20_000_000
        self.log_index = 0
        self.timestamp = 1_764_000_000
        kinds, weights = zip(*((k[:2], k[2]) for k in EVENT_KINDS), strict=True)
        self._kinds: list[tuple[str, str]] = list(kinds)
        self._weights = list(weights)
        self.count = 0

    def row(self, **override: Any) -> tuple[Any, ...]:
        rng = self.rng
        if rng.random() < 0.3:
            self.block += 1
            self.log_index = 0
            self.timestamp += 2
        self.log_index += 1
        registry, event_type = rng.choices(self._kinds, self._weights)[0]
        chain = CHAINS[0] if rng.random() < 0.7 else rng.choice(CHAINS)
        agent = int(self.agents ** rng.random())  # log-uniform: a long tail of agents
        event: dict[str, Any] = dict.fromkeys(COLUMNS)
        self.count += 1
        event.update(
            id=f"{self.prefix}{chain}-{self.block}-{self.log_index}-{self.count}",
            chain_id=chain,
            block_number=self.block,
            block_hash=_hex(rng, 32),
            transaction_hash=_hex(rng, 32),
            log_index=self.log_index,
            registry=registry,
            event_type=event_type,
            agent_id=agent,
            timestamp=self.timestamp,
        )
        if registry == "reputation":
            event.update(
                client_address=address(rng.randrange(self.clients)),
                feedback_index=rng.randrange(1, 50),
            )
            if event_type == "NewFeedback":
                score = max(0, min(100, int(rng.gauss(72, 20))))
                event.update(
                    score=score,
                    tag1=rng.choice(TAGS),
                    tag2=rng.choice(TAGS),
                    value=score * 10**16,
                    value_decimals=18,
                    endpoint=f"https://agent{agent}.example/api",
                    file_uri=f"ipfs://bafy{_hex(rng, 16)[2:]}",
                    file_hash=_hex(rng, 32),
                )
            elif event_type == "ResponseAppended":
                event.update(response_uri=f"ipfs://bafy{_hex(rng, 16)[2:]}")
        elif registry == "validation":
            event.update(
                validator_address=address(100_000 + rng.randrange(self.validators)),
                request_hash=_hex(rng, 32),
                request_uri=f"ipfs://bafy{_hex(rng, 16)[2:]}",
            )
            if event_type == "ValidationResponse":
                event.update(
                    response=rng.choice((0, 50, 100, 100, 100)),
                    response_hash=_hex(rng, 32),
                    tag=rng.choice(TAGS),
                )
        else:
            event.update(owner=address(50_000 + agent))
            if event_type in ("Registered", "URIUpdated"):
                event.update(token_uri=f"ipfs://bafy{_hex(rng, 16)[2:]}/agent.json")
            else:
                event.update(metadata_key="agentWallet", metadata_value=address(agent))
        event.update(override)
        return tuple(event[c] for c in COLUMNS)

    def rows(self, n: int, **override: Any) -> list[tuple[Any, ...]]:
        return [self.row(**override) for _ in range(n)]


def _rest(url: str, body: str) -> str:
    return f"""    actions:
      - rest:
          url: {url}
          body: {body}
        retry: {{attempts: 1}}
"""


#: Rules per generated file: the loader refuses files over 4 MB.
RULES_PER_FILE = 5000


def chunked(make: Callable[[int, str, int], str], n: int, url: str) -> list[str]:
    """``n`` rules as several rule files' texts (ids stay unique across them)."""
    return [make(min(RULES_PER_FILE, n - s), url, s) for s in range(0, n, RULES_PER_FILE)]


def rule_set_yaml(n: int, url: str, start: int = 0, *, agents: int = 5000) -> str:
    """``n`` rules: 60% per-agent where rules, 10% where-only on validators,
    10% per-agent EMA, 10% per-agent counts, 10% identity changes per agent."""
    rng = random.Random(start)
    body = '{rule: "{{ rule.id }}", event: "{{ event.id }}"}'
    parts = ["rules:\n"]
    for i in range(start, start + n):
        kind = i % 10
        agent = rng.randrange(1, agents + 1)
        head = f"  - id: r{i}\n"
        if kind < 6:
            head += (
                "    on: {registry: reputation, event_type: NewFeedback}\n"
                f"    where: {{agent_id: {agent}, score: {{lt: {rng.choice((20, 30, 40))}}}}}\n"
            )
        elif kind == 6:
            head += (
                "    on: {registry: validation, event_type: ValidationResponse}\n"
                f"    where: {{validator_address: '{address(100_000 + rng.randrange(2000))}',"
                " response: {lt: 50}}\n"
            )
        elif kind == 7:
            head += (
                "    on: {registry: reputation, event_type: NewFeedback}\n"
                f"    where: {{agent_id: {agent}}}\n"
                "    per: client_address\n"
                "    when: {ema: {of: score, window: 5, below: 40}}\n"
                "    throttle: {cooldown: 1h}\n"
            )
        elif kind == 8:
            head += (
                "    on: {registry: validation, event_type: ValidationRequest}\n"
                f"    where: {{agent_id: {agent}}}\n"
                "    per: agent_id\n"
                "    when: {count: {within: 1h, at_least: 5, reset_on_fire: true}}\n"
            )
        else:
            head += (
                "    on: {registry: identity}\n"
                f"    where: {{agent_id: {agent}, token_uri: {{exists: true}}}}\n"
            )
        parts.append(head + _rest(url, body))
    return "".join(parts)


def shared_key_yaml(n: int, url: str, start: int = 0) -> str:
    """``n`` rules on one (chain, registry, event_type), each for one agent_id."""
    body = '{rule: "{{ rule.id }}", event: "{{ event.id }}"}'
    parts = ["rules:\n"]
    for i in range(start, start + n):
        parts.append(
            f"  - id: s{i}\n"
            "    on: {chain_id: 8453, registry: reputation, event_type: NewFeedback}\n"
            f"    where: {{agent_id: {i + 1}}}\n" + _rest(url, body)
        )
    return "".join(parts)


def live_rule_yaml(url: str, *, stateful_groups: bool = False) -> str:
    """One rule firing on every event the live inserter writes (tag1 'bench-live')."""
    body = '{event: "{{ event.id }}"}'
    text = (
        "rules:\n  - id: bench-live\n"
        "    on: {registry: reputation, event_type: NewFeedback}\n"
        "    where: {tag1: bench-live}\n"
    )
    if stateful_groups:
        text += "    per: agent_id\n    when: {count: {within: 1d, at_least: 1}}\n"
    return text + _rest(url, body)


def _rest_document(url: str) -> list[dict[str, Any]]:
    body = {"rule": "{{ rule.id }}", "event": "{{ event.id }}"}
    return [{"rest": {"url": url, "body": body}, "retry": {"attempts": 1}}]


def rule_set_documents(
    n: int, url: str, start: int = 0, *, agents: int = 5000
) -> list[dict[str, Any]]:
    """The rules of ``rule_set_yaml`` (same mix, same random draws) as documents, the form
    the API stores: for organizations' rules, written in bulk without a YAML parse."""
    rng = random.Random(start)
    documents = []
    for i in range(start, start + n):
        kind = i % 10
        agent = rng.randrange(1, agents + 1)
        feedback = {"registry": "reputation", "event_type": "NewFeedback"}
        doc: dict[str, Any] = {"id": f"r{i}"}
        if kind < 6:
            doc["on"] = feedback
            doc["where"] = {"agent_id": agent, "score": {"lt": rng.choice((20, 30, 40))}}
        elif kind == 6:
            doc["on"] = {"registry": "validation", "event_type": "ValidationResponse"}
            doc["where"] = {
                "validator_address": address(100_000 + rng.randrange(2000)),
                "response": {"lt": 50},
            }
        elif kind == 7:
            doc["on"] = feedback
            doc["where"] = {"agent_id": agent}
            doc["per"] = "client_address"
            doc["when"] = {"ema": {"of": "score", "window": 5, "below": 40}}
            doc["throttle"] = {"cooldown": "1h"}
        elif kind == 8:
            doc["on"] = {"registry": "validation", "event_type": "ValidationRequest"}
            doc["where"] = {"agent_id": agent}
            doc["per"] = "agent_id"
            doc["when"] = {"count": {"within": "1h", "at_least": 5, "reset_on_fire": True}}
        else:
            doc["on"] = {"registry": "identity"}
            doc["where"] = {"agent_id": agent, "token_uri": {"exists": True}}
        doc["actions"] = _rest_document(url)
        documents.append(doc)
    return documents


def tag_rule_document(rule_id: str, tag: str, url: str) -> dict[str, Any]:
    """A rule that fires on every event with ``tag1: tag`` (what the tenants figures write
    and watch), posting the event's id."""
    return {
        "id": rule_id,
        "on": {"registry": "reputation", "event_type": "NewFeedback"},
        "where": {"tag1": tag},
        "actions": [
            {"rest": {"url": url, "body": {"event": "{{ event.id }}"}}, "retry": {"attempts": 1}}
        ],
    }
