"""The project's exception tree, split by what the caller must do.

It lives in ``rules`` because ``rules`` imports nothing of ours; every other package
builds on it.  It must never import anything beyond the standard library.  This drawing
is the only one: every exception class of engine, actions, rules, devkit and sql is on
it (tests/unit/rules/test_exception_tree.py checks), where it is defined in brackets.

    EngineError                      anything the engine reports to a user
    ├── ConfigError                  bad config file or environment (file, line)
    │   └── SecretsKeyMissing        (engine.tenants.secrets_box) no secrets_key configured
    ├── RuleError                    a rule file mistake (file, line, rule id)
    ├── UnsetVariableError           (rules.envsubst) ${VAR} without default, VAR unset
    │   └── DisallowedVariableError  (rules.envsubst) VAR is not in the config's rules_env
    ├── DurationError                (rules.durations) not a duration; also a ValueError
    ├── TemplateRenderError          a template failed at firing time
    ├── RenderBudgetExceeded         (rules.sandbox) a render over its time or size
    │                                budget; also jinja's SecurityError, so the sandbox
    │                                stops the render; reaches callers as a
    │                                TemplateRenderError
    ├── DatabaseError                (sql) the database is unreachable or refused a statement
    ├── CursorAheadError             (engine.cursor) the cursor is beyond this cluster's
    │                                transaction ids: evaluation stops for an operator
    ├── CursorMovedError             (engine.cursor) another engine advanced the cursor:
    │                                the batch rolled back, read the cursor again
    ├── DatabaseEncodingError        (engine.migrate) the database is not UTF8: not migrated
    ├── SecretUnreadable             (engine.tenants.secrets_box) a stored secret does not
    │                                open under the configured secrets_key
    ├── LocalStackError              (devkit.localstack) a private server did not start/stop
    ├── ApiError                     (engine.api.errors) a request `engine api` refuses:
    │                                its HTTP status and message
    ├── OrgError                     (engine.tenants.orgs) an operator's request about
    │                                organizations or keys that cannot be done as asked
    ├── PushError                    (engine.rules_push) a directory's rules cannot be
    │                                pushed: a file's mistakes, or the API refused
    ├── ExplainError                 (engine.explain) no such stored event, or no such
    │                                rule to explain it against
    └── ActionError                  (actions.errors) executing an action failed
        ├── RetryableActionError     try again later (retry_after seconds, if known)
        └── PermanentActionError     never retry: dead letter at once
            ├── AddressRefused       (actions.netguard) the network guard refused the address
            └── RenderOverBudget     (actions.render_jail) a template outran the render
                                     budget: its process was killed

A rule that raises while evaluating one event is not an exception to its caller: the
evaluator counts it (``engine_rule_errors``), logs it once and goes on.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine reports to a user."""


class ConfigError(EngineError):
    """The config file or the environment is wrong; names the file and line when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class RuleError(EngineError):
    """A mistake in a rule file: ``FILE:LINE rule 'ID': message``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        rule_id: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.rule_id = rule_id
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        if self.rule_id is not None:
            parts.append(f"rule '{self.rule_id}':")
        elif parts:
            parts[-1] += ":"
        parts.append(self.message)
        return " ".join(parts)


class TemplateRenderError(EngineError):
    """A template failed at firing time (undefined name, sandbox refusal, size limit)."""
