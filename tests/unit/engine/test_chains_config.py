"""The `chains:` section: confirmations per chain, a default, errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from rules.errors import ConfigError


def test_listed_chains_and_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "chains:\n  default: {confirmations: 1}\n  84532: {confirmations: 3, name: base-sepolia}\n"
        '  "8453": {confirmations: 0}\n',
        encoding="utf-8",
    )
    chains = load_config(path, environ={}).chains
    assert chains.confirmations_of(84532) == 3
    assert chains.confirmations_of(8453) == 0
    assert chains.confirmations_of(1) == 1
    assert chains.name_of(84532) == "base-sepolia"
    assert chains.holds_any


def test_without_the_section_nothing_waits(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("rules: []\n", encoding="utf-8")
    chains = load_config(path, environ={}).chains
    assert chains.confirmations_of(84532) == 0
    assert not chains.holds_any


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chains:\n  84532: {confirmations: -1}\n", ":2: chains.84532.confirmations must be"),
        ("chains:\n  84532: {confirmation: 3}\n", ":2: chains.84532.confirmation must be one of"),
        ("chains:\n  base: {confirmations: 3}\n", ":2: chains.base must be a chain id"),
        ("chains:\n  84532: 3\n", ":2: chains.84532 must be a mapping"),
        ("chains:\n  default: {name: x}\n", ":2: chains.default.name must be one of"),
    ],
)
def test_mistakes_name_the_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)
