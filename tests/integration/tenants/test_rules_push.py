"""`engine rules push DIR` (the real command) against a real `engine api`: the plan it
prints, what it changes, and its exit status and messages when something is wrong."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.tenants.api_fixtures import Api, Org, api
from tests.processes import query_all, run_engine

__all__ = ["api"]

FILE_A = """\
rules:
  - id: low-score
    on: {registry: reputation, event_type: NewFeedback}
    where: {score: {lt: 30}}
    actions:
      - rest: {url: "https://example.com/a", body: {score: "{{ event.score }}"}}
  - id: new-agent
    on: {registry: identity, event_type: Registered}
    actions:
      - rest: {url: "https://example.com/b", body: {}}
"""

FILE_B = """\
x-hook: &hook {url: "https://example.com/c", body: {}}
rules:
  - id: validations
    on: {registry: validation}
    actions:
      - rest: *hook
"""


def _push(api: Api, directory: Path, key: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_engine(None, "rules", "push", str(directory), "--api", api.url, "--key", key, *flags)


def _stored(api: Api, org: Org) -> dict[str, int]:
    rows = query_all(api.dsn, "SELECT rule_id, version FROM triggers WHERE org_id = $1", org.id)
    return dict(rows)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "rules"
    (repo / "team").mkdir(parents=True)
    (repo / "a.yaml").write_text(FILE_A, encoding="utf-8")
    (repo / "team" / "b.yml").write_text(FILE_B, encoding="utf-8")
    return repo


def test_push_creates_then_changes_only_what_changed(api: Api, tmp_path: Path) -> None:
    org = api.org()
    repo = _repo(tmp_path)

    dry = _push(api, repo, org.editor, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "create     low-score" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    assert _stored(api, org) == {}

    first = _push(api, repo, org.editor)
    assert first.returncode == 0, first.stderr
    assert "applied: 3 to create, 0 to update, 0 to delete, 0 unchanged" in first.stdout
    assert _stored(api, org) == {"low-score": 1, "new-agent": 1, "validations": 1}

    second = _push(api, repo, org.editor)
    assert second.returncode == 0, second.stderr
    assert "0 to create, 0 to update, 0 to delete, 3 unchanged" in second.stdout
    assert _stored(api, org) == {"low-score": 1, "new-agent": 1, "validations": 1}

    (repo / "a.yaml").write_text(FILE_A.replace("lt: 30", "lt: 20"), encoding="utf-8")
    edited = _push(api, repo, org.editor)
    assert edited.returncode == 0, edited.stderr
    assert f"update     low-score  ({repo / 'a.yaml'}:2)" in edited.stdout
    assert "1 to update" in edited.stdout
    assert _stored(api, org) == {"low-score": 2, "new-agent": 1, "validations": 1}

    (repo / "team" / "b.yml").unlink()
    kept = _push(api, repo, org.editor)
    assert kept.returncode == 0, kept.stderr
    assert "kept       validations  (not in the directory; --prune deletes it)" in kept.stdout
    assert "validations" in _stored(api, org)

    dry_prune = _push(api, repo, org.editor, "--prune", "--dry-run")
    assert "delete     validations" in dry_prune.stdout
    assert "validations" in _stored(api, org)

    pruned = _push(api, repo, org.editor, "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "1 to delete" in pruned.stdout
    assert _stored(api, org) == {"low-score": 2, "new-agent": 1}


def test_a_broken_file_pushes_nothing_and_names_file_and_line(api: Api, tmp_path: Path) -> None:
    org = api.org()
    repo = _repo(tmp_path)
    broken = FILE_A.replace("body: {}}\n", 'body: {}, headers: {X: "${TOKEN}"}}\n').replace(
        "lt: 30", "lt: abc"
    )
    (repo / "a.yaml").write_text(broken, encoding="utf-8")
    result = _push(api, repo, org.editor)
    assert result.returncode == 1
    assert f"{repo / 'a.yaml'}:4 rule 'low-score': where.score.lt" in result.stderr
    assert "rule 'new-agent'" in result.stderr
    assert "{secret: NAME}" in result.stderr
    assert "nothing was pushed" in result.stderr
    assert "Traceback" not in result.stderr
    assert _stored(api, org) == {}


def test_an_api_refusal_or_a_bad_key_exits_1_with_the_apis_message(
    api: Api, tmp_path: Path
) -> None:
    org = api.org(max_rules=2)
    repo = _repo(tmp_path)
    bad_key = _push(api, repo, "te_aaaaaaaaaaaa_" + "b" * 43)
    assert bad_key.returncode == 1
    assert "the API answered 401: unknown API key" in bad_key.stderr

    viewer = _push(api, repo, org.viewer)
    assert viewer.returncode == 1
    assert "the API answered 403" in viewer.stderr
    assert "rule 'low-score'" in viewer.stderr

    over_quota = _push(api, repo, org.editor)
    assert over_quota.returncode == 1
    assert "rule 'validations': the API answered 409" in over_quota.stderr
    assert "max_rules" in over_quota.stderr
