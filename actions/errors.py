"""Errors raised by action executors, split by what the worker must do next.

``RetryableActionError``: the row goes 'retrying' (or 'failed' when its attempts are
spent), ``retry_after`` overriding the backoff.  ``PermanentActionError``: the row goes
'failed' at once (a dead letter, replayable).  Their place in the one exception tree is
drawn in ``rules/errors.py``.
"""

from __future__ import annotations

from typing import Any

from rules.errors import EngineError


class ActionError(EngineError):
    """Executing an action failed; ``response_data`` is recorded in action_results."""

    def __init__(self, message: str, *, response_data: dict[str, Any] | None = None) -> None:
        self.message = message
        self.response_data = response_data
        super().__init__(message)


class RetryableActionError(ActionError):
    """A transient failure (connection refused, timeout, 408, 429, 5xx, Telegram 429)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        response_data: dict[str, Any] | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, response_data=response_data)


class PermanentActionError(ActionError):
    """A failure that another attempt cannot fix (4xx, bad template, refused address)."""
