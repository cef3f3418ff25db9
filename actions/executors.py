"""The executors by action kind: what ``engine worker`` calls for each queued action.

Not ERC-8004's registries: those are event sources, named in rules' ``on: registry``.
"""

from __future__ import annotations

from actions.base import Executor
from actions.mcp_tool import execute_mcp
from actions.rest import execute_rest
from actions.telegram import execute_telegram

EXECUTORS: dict[str, Executor] = {
    "rest": execute_rest,
    "telegram": execute_telegram,
    "mcp": execute_mcp,
}
