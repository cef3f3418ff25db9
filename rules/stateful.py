"""Runs a rule's `when` conditions and throttle over one event: the pure heart of `step`.

State layout (JSON, persisted per rule and group):
``{"when": {"<condition>": {...}}, "throttle": {"last": t, "fired": [t, ...]}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.conditions import Condition
from rules.conditions.base import event_time
from rules.model import Step
from rules.throttle import Throttle


@dataclass(frozen=True)
class StateMachine:
    """The stateful part of a rule."""

    conditions: tuple[Condition, ...]
    throttle: Throttle | None

    def step(self, event: Mapping[str, Any], state: Mapping[str, Any] | None) -> Step:
        """Update every condition, then apply the throttle; never mutates ``state``."""
        now = event_time(event)
        old = state if isinstance(state, Mapping) else {}
        old_when = old.get("when")
        if not isinstance(old_when, Mapping):
            old_when = {}
        when: dict[str, Any] = {}
        shown: dict[str, Any] = {}
        all_hold = True
        for condition in self.conditions:
            outcome = condition.update(event, old_when.get(condition.key), now)
            when[condition.key] = outcome.state
            shown[condition.key] = outcome.value
            all_hold = all_hold and outcome.holds
        new_state: dict[str, Any] = {"when": when}
        fired = suppressed = False
        if self.throttle is not None:
            throttle_state = old.get("throttle")
            if all_hold:
                allowed, throttle_state = self.throttle.admit(throttle_state, now)
                fired, suppressed = allowed, not allowed
            new_state["throttle"] = (
                dict(throttle_state) if isinstance(throttle_state, Mapping) else {}
            )
        else:
            fired = all_hold
        if fired:
            for condition in self.conditions:
                when[condition.key] = condition.after_fire(when[condition.key])
        return Step(fired=fired, suppressed=suppressed, state=new_state, template_state=shown)
