"""``engine up`` end to end, as a newcomer runs it: ready, a demo event delivered to the
local receiver, the tenant flow the banner prints (the API, the demo organization's key,
its rules pushed and firing), and Ctrl-C leaving no process behind.

The stack's root is a directory under /tmp (never the repository, whose ``.engine/``
belongs to the user) holding a link to the repository's ``examples/``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.localstack import pid_alive
from tests.processes import ROOT, wait_until

UP_READY_TIMEOUT_S = 90  # the first start runs initdb
DELIVERY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30


@pytest.fixture
def up_root() -> Iterator[Path]:
    """A root for ``engine up`` that the ``postgres`` user can traverse (we may be root)."""
    path = Path(tempfile.mkdtemp(prefix="engine-up-test-", dir="/tmp"))
    path.chmod(0o755)
    (path / "examples").symlink_to(ROOT / "examples")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _postmaster_pid(root: Path) -> int:
    return int((root / ".engine" / "postgres" / "postmaster.pid").read_text().split()[0])


class UpProcess:
    """``engine up`` in ``root``, its output in a file we can read while it runs."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.log_path = root / "up.log"
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {k: v for k, v in os.environ.items() if k not in ("WEBHOOK_URL", "ENGINE_CONFIG")}
        env.pop("TELEGRAM_BOT_TOKEN", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "up", *args],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        """What this run printed (an earlier run in the same root wrote the start)."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode("utf-8", "replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine up exited early:\n{self.output()}")
            return "engine up: ready" in self.output()

        wait_until(ready, timeout=UP_READY_TIMEOUT_S, interval=0.2, what="engine up: ready")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(STOP_TIMEOUT_S)

    def kill(self) -> None:
        """After a failure: Ctrl-C first, so the servers and children it started stop too
        (a SIGKILL would orphan them); SIGKILL only if that does not work."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _banner_pid(output: str, name: str) -> int:
    match = re.search(rf"^\s+{name}\s+pid (\d+)", output, re.MULTILINE)
    assert match, f"no {name} pid in the banner:\n{output}"
    return int(match.group(1))


def _banner_api(output: str) -> tuple[str, str]:
    """The API's URL and the demo organization's key, as the banner shows them."""
    api = re.search(r"^\s+api\s+pid \d+, (http://\S+)", output, re.MULTILINE)
    key = re.search(r"^\s+demo key\s+(te_\S+)", output, re.MULTILINE)
    assert api and key, f"no API URL or demo key in the banner:\n{output}"
    return api.group(1), key.group(1)


def _banner_command(output: str, words: str) -> list[str]:
    """The banner's command containing ``words``, run with this interpreter's engine."""
    line = next((x.strip() for x in output.splitlines() if words in x and "#" not in x), None)
    assert line, f"no command with {words!r} in the banner:\n{output}"
    argv = shlex.split(line)
    assert Path(argv[0]).name == "engine", line
    return [sys.executable, "-m", "engine", *argv[1:]]


def _emit(root: Path, *fields: str) -> subprocess.CompletedProcess[str]:
    config = root / ".engine" / "config.yaml"
    return subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(config), "emit", *fields],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_up_delivers_a_demo_event_and_ctrl_c_stops_every_child(up_root: Path) -> None:
    up = UpProcess(up_root)
    try:
        up.wait_ready()
        output = up.output()
        assert "Emit a demo event:" in output
        assert "emit reputation NewFeedback agent_id=42 score=12" in output
        assert (up_root / ".engine" / "config.yaml").is_file()

        engine_pid, worker_pid = _banner_pid(output, "engine"), _banner_pid(output, "worker")
        api_pid = _banner_pid(output, "api")
        pids = _descendants(up.proc.pid) | {_postmaster_pid(up_root)}
        assert {engine_pid, worker_pid, api_pid} <= pids

        # The tenant flow of the banner: the API answers with the printed key, the
        # organization stores its bot token and pushes its rules.
        api, key = _banner_api(output)
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{api}/healthz", timeout=5).status_code == 200
        rules = httpx.get(f"{api}/v1/rules", headers=auth, timeout=5)
        assert rules.status_code == 200, rules.text
        assert rules.json()["rules"] == []
        assert httpx.get(f"{api}/v1/rules", timeout=5).status_code == 401
        stored = httpx.put(
            f"{api}/v1/secrets/BOT_TOKEN", headers=auth, json={"value": "000000:demo"}, timeout=5
        )
        assert stored.status_code == 201, stored.text
        push = subprocess.run(
            _banner_command(output, " rules push "),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert push.returncode == 0, push.stdout + push.stderr
        assert "create     low-feedback" in push.stdout

        emitted = _emit(up_root, "reputation", "NewFeedback", "agent_id=42", "score=12")
        assert emitted.returncode == 0, emitted.stderr
        assert "inserted event" in emitted.stdout

        # The REST example rule for agent 42 reaches the receiver (WEBHOOK_URL points at
        # it), and the Telegram example rule reaches the stand-in; both are printed.
        def delivered() -> bool:
            text = up.output()
            return (
                '"rule": "example-agent-id-equals"' in text
                and "Low score <b>12</b> for agent 42" in text
                and '"organization": "demo"' in text
                and "demo organization: score <b>12</b> for agent 42" in text
            )

        wait_until(delivered, timeout=DELIVERY_TIMEOUT_S, interval=0.2, what="both deliveries")
        assert "── receiver" in up.output()
        assert "── telegram" in up.output()

        def audit_rows() -> list[dict[str, object]]:
            page = httpx.get(f"{api}/v1/actions", headers=auth, timeout=5).json()
            rows: list[dict[str, object]] = page["actions"]
            return rows if all(r["status"] == "success" for r in rows) else []

        rows = wait_until(audit_rows, timeout=DELIVERY_TIMEOUT_S, what="the audit rows")
        assert sorted(str(r["action_type"]) for r in rows) == ["rest", "telegram"]

        pids |= _descendants(up.proc.pid)
        assert up.interrupt() == 0
    finally:
        up.kill()
    output = up.output()
    assert "engine up: stopping" in output
    wait_until(
        lambda: not [pid for pid in pids if pid_alive(pid)],
        timeout=10,
        what="every process engine up started to be gone",
    )


def test_second_up_starts_again_on_the_kept_data(up_root: Path) -> None:
    first = UpProcess(up_root)
    try:
        first.wait_ready()
        _, first_key = _banner_api(first.output())
        assert _emit(up_root, "identity", "Registered", "agent_id=1").returncode == 0
        assert first.interrupt() == 0
    finally:
        first.kill()

    second = UpProcess(up_root)
    try:
        second.wait_ready()
        # The key shown once stays valid: the second start shows and accepts the same.
        api, key = _banner_api(second.output())
        assert key == first_key
        answer = httpx.get(f"{api}/v1/rules", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert answer.status_code == 200, answer.text
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "--config",
                str(up_root / ".engine" / "config.yaml"),
                "status",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert '"events_evaluated": 1' in status.stdout  # the first run's event, kept
        assert second.interrupt() == 0
    finally:
        second.kill()


def test_up_demo_streams_events_that_fire_example_rules(up_root: Path) -> None:
    up = UpProcess(up_root, "--demo")
    try:
        up.wait_ready()
        wait_until(
            lambda: up.output().count("── receiver") + up.output().count("── telegram") >= 2,
            timeout=45,
            interval=0.5,
            what="two deliveries of demo events",
        )
        assert "demo events stopped" not in up.output()
        assert up.interrupt() == 0
    finally:
        up.kill()
