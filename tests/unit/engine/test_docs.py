"""Every rule file shown in the docs loads without error and passes its own tests, so the
docs cannot drift from the language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rules import load_rules, run_rule_tests

ROOT = Path(__file__).resolve().parents[3]
DOCS = ("README.md", "docs/rules.md")
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
ENVIRON = {"WEBHOOK_URL": "https://hooks.example.com/from-env"}


def _rule_files() -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            block = match.group(1)
            if re.search(r"^rules:", block, re.MULTILINE):
                line = text.count("\n", 0, match.start()) + 2
                found.append((doc, line, block))
    return found


def test_the_docs_have_rule_examples() -> None:
    assert len(_rule_files()) >= 8


@pytest.mark.parametrize(
    ("doc", "line", "block"), _rule_files(), ids=[f"{d}:{n}" for d, n, _ in _rule_files()]
)
def test_rule_example_loads_and_its_tests_pass(
    doc: str, line: int, block: str, tmp_path: Path
) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(block, encoding="utf-8")
    loaded = load_rules([path], environ=ENVIRON, bot_names={"default"})
    assert not loaded.errors, f"{doc}:{line}: " + "\n".join(map(str, loaded.errors))
    assert loaded.rules
    results = run_rule_tests(loaded.rules, environ=ENVIRON)
    assert results, f"{doc}:{line}: the example has no tests"
    failed = [r for r in results if not r.passed]
    assert not failed, f"{doc}:{line}: {failed}"
