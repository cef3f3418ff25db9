"""Errors raised by action executors, split by what the worker must do next.

EngineError (rules.errors)
└── ActionError
    ├── RetryableActionError   transient: the row goes 'retrying' (or 'failed' when the
    │                          attempts are spent); ``retry_after`` overrides the backoff
    └── PermanentActionError   the row goes 'failed' at once (dead letter, replayable)
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
