"""Runs a rule's `when` conditions and throttle over one event: the pure heart of `step`.

State layout (JSON, persisted per rule and group):
``{"when": {"<condition>": {...}}, "throttle": {"last": t, "fired": [t, ...]}}``.

How event time is trusted: the caller passes ``trusted_until``, the latest event time it
believes (the engine: its wall clock plus engine.max_event_future_skew_s).  An event
stamped later is still evaluated, but as one without a usable time: it adds nothing to a
time window, a throttle suppresses it, and it cannot move any stored time forward.  So
one far-future `timestamp` cannot silence a rule or fill a window for everyone after it.
Stored times later than ``trusted_until`` are forgotten.  This module reads no clock.
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

    def step(
        self,
        event: Mapping[str, Any],
        state: Mapping[str, Any] | None,
        trusted_until: int | None = None,
    ) -> Step:
        """Update every condition, then apply the throttle; never mutates ``state``.

        ``trusted_until`` None trusts every event time (rule tests: their events are
        their own clock).
        """
        now = event_time(event)
        if now is not None and trusted_until is not None and now > trusted_until:
            now = None
        old = state if isinstance(state, Mapping) else {}
        old_when = old.get("when")
        if not isinstance(old_when, Mapping):
            old_when = {}
        when: dict[str, Any] = {}
        shown: dict[str, Any] = {}
        all_hold = True
        for condition in self.conditions:
            outcome = condition.update(event, old_when.get(condition.key), now, trusted_until)
            when[condition.key] = outcome.state
            shown[condition.key] = outcome.value
            all_hold = all_hold and outcome.holds
        new_state: dict[str, Any] = {"when": when}
        fired = suppressed = False
        if self.throttle is not None:
            throttle_state = old.get("throttle")
            if all_hold:
                allowed, throttle_state = self.throttle.admit(throttle_state, now, trusted_until)
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
