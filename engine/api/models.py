"""The API's request and response bodies (pydantic), as the OpenAPI document shows them.

Request models forbid unknown fields: a misspelt field is a 422 naming it, not a silently
ignored setting.  Rule documents are free-form here; the rule compiler checks them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

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
    silence_id: int | None = Field(
        default=None, description="the silence that held it back (status `silenced`)"
    )


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


def _storable(value: str) -> str:
    """Text PostgreSQL can store and a worker can send: UTF-8, no NUL."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (a lone surrogate?)") from None
    return value


StorableText = Annotated[str, AfterValidator(_storable)]
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
MAX_SECRET_CHARS = 65_536


class SecretValue(BaseModel):
    """The body of PUT /v1/secrets/{name}: the value, which no answer ever shows."""

    model_config = ConfigDict(extra="forbid")

    value: StorableText = Field(min_length=1, max_length=MAX_SECRET_CHARS)


class SecretInfo(BaseModel):
    """A stored secret as the API shows it: its name and times, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


class SecretWritten(SecretInfo):
    created: bool = Field(description="true: a new secret (201); false: it replaced one (200)")


class SecretList(BaseModel):
    secrets: list[SecretInfo]


class AgentTokenValue(BaseModel):
    """The body of PUT /v1/agent-tokens/{chain_id}/{agent_id}: an MCP bearer token."""

    model_config = ConfigDict(extra="forbid")

    token: StorableText = Field(min_length=1, max_length=MAX_SECRET_CHARS)


class AgentTokenInfo(BaseModel):
    """Whose MCP token is stored (never the token)."""

    chain_id: int
    agent_id: int
    updated_at: datetime


class AgentTokenWritten(AgentTokenInfo):
    created: bool = Field(description="true: a new token (201); false: it replaced one (200)")


class AgentTokenList(BaseModel):
    agent_tokens: list[AgentTokenInfo]


BIGINT_MAX = 2**63 - 1


class FollowRequest(BaseModel):
    """The body of POST /v1/follows: an agent to follow and what to do on its events."""

    model_config = ConfigDict(extra="forbid")

    chain_id: int = Field(ge=1, le=BIGINT_MAX)
    agent_id: int = Field(ge=0, le=BIGINT_MAX)
    actions: list[dict[str, Any]] = Field(
        min_length=1, description="a rule's `actions:`, as in a rule file"
    )


class Follow(BaseModel):
    """An agent followed: the rule that fires on every event of it."""

    chain_id: int
    agent_id: int
    rule: StoredRule


class FollowWritten(BaseModel):
    """The answer to POST /v1/follows."""

    chain_id: int
    agent_id: int
    rules: list[RuleWritten] = Field(description="the rules the follow is made of")


class FollowPage(BaseModel):
    follows: list[Follow]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


MAX_REQUEST_EVENTS = 1000


class EventsToTest(BaseModel):
    """Events to evaluate, in order, from fresh state (partial rows, as in a rule's tests)."""

    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=MAX_REQUEST_EVENTS,
        description="partial event rows as in a rule's `tests:` (missing chain_id, "
        "registry, event_type come from the rule's `on`; missing timestamps count up)",
    )


class RuleTestRequest(EventsToTest):
    """The body of POST /v1/rule-tests: a rule that need not be stored."""

    rule: dict[str, Any] | str = Field(
        description="one rule: a JSON mapping, or YAML text (a rule, or a rule file with one)"
    )


class RuleTestOutcome(BaseModel):
    """One of the rule's `tests:`."""

    name: str
    line: int | None = Field(description="its line in the YAML the rule came from")
    passed: bool
    expected_fires: list[int]
    actual_fires: list[int]
    messages: list[str]


class RenderedAction(BaseModel):
    """An action of a firing as a worker would send it (nothing is sent)."""

    index: int
    kind: str
    name: str | None
    rendered: dict[str, Any] | None = Field(description="null when it does not render")
    error: str | None = Field(description="why it does not render")


class FiringOut(BaseModel):
    """One firing (or throttled firing) of the rule."""

    event_index: int
    event_id: str | None
    block_number: int | None
    timestamp: int | None
    group: dict[str, Any]
    suppressed: bool = Field(description="true: the throttle held it back; nothing would be sent")
    actions: list[RenderedAction]


class EventsOutcome(BaseModel):
    fired: list[int] = Field(description="indexes of the events on which the rule fired")
    firings: list[FiringOut]


class RuleTestReport(BaseModel):
    """The answer to a rule test: its `tests:` and, when events were given, their firings."""

    rule_id: str
    passed: bool = Field(description="every test of the rule passed")
    tests: list[RuleTestOutcome]
    events: EventsOutcome | None


class BacktestRequest(BaseModel):
    """The body of POST /v1/rules/{id}/backtest."""

    model_config = ConfigDict(extra="forbid")

    since: str = Field(
        default="7d",
        max_length=64,
        description="a duration ago (7d), an ISO date/time, or unix seconds",
    )
    until: str | None = Field(default=None, max_length=64, description="as since; default: now")
    limit: int = Field(default=100, ge=1, le=10_000, description="firings listed at most")


class BacktestReport(BaseModel):
    """What the stored rule would have done over stored events, from fresh state."""

    rule_id: str
    since: datetime
    until: datetime
    events: int = Field(description="events evaluated")
    complete: bool = Field(
        description="false: the range held more than api.backtest_max_events events, or "
        "evaluating took longer than api.backtest_timeout_s; only the oldest were evaluated"
    )
    fired: int = Field(description="firings (suppressed ones not counted)")
    suppressed: int = Field(description="firings the throttle held back")
    firings: list[FiringOut]
    truncated: bool = Field(description="more firings happened than are listed")
