"""A plausible stream of ERC-8004 events for ``engine up --demo``.

Shaped so that every example rule (``examples/rules``) has something to fire on within
minutes: agent 42 gets mixed feedback, agent 13 struggles (low scores, a falling average),
one client sends feedback in bursts, some feedback carries a file, a tag or a value, agents
register and move their registration files, validators are asked and answer (some of them
the trusted ones of the whitelist example).  ``DemoStream`` is pure (a seeded ``Random``
gives the same stream), so a test can check that claim offline.
"""

from __future__ import annotations

import random
from typing import Any

# The trusted validators of examples/rules/validator-whitelist.yaml.
TRUSTED_VALIDATORS = (
    "0x1111111111111111111111111111111111111111",
    "0xAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAa",
)
WELL_KNOWN_AGENT = 42  # the agent of the example rules and of the banner's emit command
STRUGGLING_AGENT = 13
TAGS = ("uptime", "latency", "accuracy", None)

DemoEvent = tuple[str, str, dict[str, Any]]  # registry, event type, fields


class DemoStream:
    """Endless ERC-8004 events; ``next_event()`` gives (registry, event type, fields)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.agents = [WELL_KNOWN_AGENT, 7, STRUGGLING_AGENT, 1337]
        self.uri_versions = dict.fromkeys(self.agents, 1)
        self.clients = [self._address() for _ in range(8)]
        self.bursty_client = self.clients[0]

    def _address(self) -> str:
        return "0x" + self.rng.randbytes(20).hex()

    def _hash(self) -> str:
        return "0x" + self.rng.randbytes(32).hex()

    def _uri(self, agent_id: int) -> str:
        return f"ipfs://bafy-agent-{agent_id}-v{self.uri_versions[agent_id]}"

    def next_event(self) -> DemoEvent:
        roll = self.rng.random()
        if roll < 0.55:
            return self._feedback()
        if roll < 0.63:
            return self._registration()
        if roll < 0.70:
            return self._uri_update()
        if roll < 0.85:
            return self._validation_request()
        return self._validation_response()

    def _feedback(self) -> DemoEvent:
        rng = self.rng
        agent_id = rng.choices(self.agents, weights=[35, 20, 25] + [5] * (len(self.agents) - 3))[0]
        if agent_id == STRUGGLING_AGENT:
            score = rng.randint(0, 30)
        else:
            score = int(rng.triangular(0, 100, 85))
        if rng.random() < 0.3:
            client = self.bursty_client
        elif rng.random() < 0.8:
            client = rng.choice(self.clients)
        else:
            client = self._address()  # a first-time client
        fields: dict[str, Any] = {
            "agent_id": agent_id,
            "score": score,
            "client_address": client,
            "feedback_index": rng.randint(1, 10_000),
            "tag1": rng.choice(TAGS),
            "value": rng.randint(0, 500),
            "value_decimals": 0,
        }
        if rng.random() < 0.2:
            fields |= {"file_uri": f"ipfs://bafy-feedback-{rng.randint(1, 10**9)}"}
            fields |= {"file_hash": self._hash()}
        return "reputation", "NewFeedback", fields

    def _registration(self) -> DemoEvent:
        agent_id = max(self.agents) + 1
        self.agents.append(agent_id)
        self.uri_versions[agent_id] = 1
        fields = {"agent_id": agent_id, "owner": self._address(), "token_uri": self._uri(agent_id)}
        return "identity", "Registered", fields

    def _uri_update(self) -> DemoEvent:
        agent_id = self.rng.choice(self.agents)
        self.uri_versions[agent_id] += 1
        return "identity", "URIUpdated", {"agent_id": agent_id, "token_uri": self._uri(agent_id)}

    def _validation_request(self) -> DemoEvent:
        agent_id = self.rng.choice([WELL_KNOWN_AGENT, 7])
        fields = {
            "agent_id": agent_id,
            "validator_address": self.rng.choice(TRUSTED_VALIDATORS),
            "request_hash": self._hash(),
        }
        return "validation", "ValidationRequest", fields

    def _validation_response(self) -> DemoEvent:
        rng = self.rng
        validator = rng.choice(TRUSTED_VALIDATORS) if rng.random() < 0.5 else self._address()
        fields = {
            "agent_id": rng.choice(self.agents),
            "validator_address": validator,
            "request_hash": self._hash(),
            "response": rng.choice([0, 50, 100, 100, 100]),
            "tag": rng.choice(TAGS),
        }
        return "validation", "ValidationResponse", fields
