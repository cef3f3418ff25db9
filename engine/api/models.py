"""The API's request and response bodies (pydantic), as the OpenAPI document shows them.

Request models forbid unknown fields: a misspelt field is a 422 naming it, not a silently
ignored setting.  Rule documents are free-form here; the rule compiler checks them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ACTION_STATUSES = ("queued", "running", "success", "failed", "retrying", "silenced")
ActionStatus = Literal["queued", "running", "success", "failed", "retrying", "silenced"]
RoleName = Literal["admin", "editor", "viewer"]
# Text that PostgreSQL can store and a person can read: no control characters.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class StoredRule(BaseModel):
    """A rule as stored: its document (the rule as written, `id` included) and version."""

    id: str
    version: int = Field(description="bumped by every change of the rule")
    rule: dict[str, Any] = Field(description="the rule document, as in a rule file's `rules:`")
    created_at: datetime
    updated_at: datetime


class RuleWritten(StoredRule):
    """The answer to PUT /v1/rules/{id}."""

    created: bool = Field(description="true: a new rule (201); false: it replaced one (200)")
    changed: bool = Field(description="false when the rule sent equals the stored one")
    state: Literal["new", "kept", "reset"] = Field(
        description="`reset` when on/where/per/when changed: its windows, counts and "
        "throttle start afresh; `kept` when only actions, description or throttle changed"
    )


class RulePage(BaseModel):
    rules: list[StoredRule]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class ActionRow(BaseModel):
    """One action firing's audit row (without what it was rendered from)."""

    id: int
    rule: str
    event_id: str | None
    action_index: int
    action_type: str
    action_name: str | None
    status: str
    attempts: int
    error_message: str | None
    response_data: Any
    created_at: datetime
    executed_at: datetime | None
    next_attempt_at: datetime | None


class ActionPage(BaseModel):
    actions: list[ActionRow]
    next: int | None = Field(description="pass as `before` for the next page; null at the end")


class EventPage(BaseModel):
    events: list[dict[str, Any]]
    next: str | None = Field(description="pass as `before` for the next page; null at the end")


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName
    name: str | None = Field(default=None, max_length=200, pattern=PRINTABLE)


class KeyInfo(BaseModel):
    id: int
    role: RoleName
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKey(KeyInfo):
    key: str = Field(description="the key itself: shown this once, only its hash is stored")


class KeyList(BaseModel):
    keys: list[KeyInfo]


class Health(BaseModel):
    status: Literal["ok"]
