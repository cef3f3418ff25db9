"""The Dockerfile and examples/docker-compose.yml, checked as far as can be without Docker:
every service runs a real `engine` subcommand, and the image is shaped as documented."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "examples" / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _engine_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("image", "").startswith("trigger-engine") or "build" in service
    }


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_compose_has_the_documented_services() -> None:
    services = _compose()["services"]
    assert set(services) >= {"db", "redis", "migrate", "engine", "worker"}
    assert services["db"]["image"].startswith("timescale/timescaledb:")
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == (
        "yes"
    )
    depends = services["engine"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["restart"] == "no"


@pytest.mark.parametrize("service", ["migrate", "engine", "worker"])
def test_each_engine_service_runs_a_real_subcommand(service: str) -> None:
    spec = _engine_services()[service]
    command = spec["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    args = build_parser().parse_args(argv)  # SystemExit on an unknown command or option
    assert args.command == argv[0]
    assert callable(args.func)


def test_every_service_image_is_the_one_built_or_a_known_server() -> None:
    for name, service in _compose()["services"].items():
        image = service.get("image", "")
        assert image.startswith(("trigger-engine", "timescale/", "redis:")), name


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    instructions = _dockerfile_instructions()
    bases = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(bases) >= 2
    assert all(base.split()[0] == "python:3.11-slim" for base in bases)
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    [entrypoint] = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint) == ["engine"]
    [cmd] = [rest for keyword, rest in instructions if keyword == "CMD"]
    build_parser().parse_args(yaml.safe_load(cmd))
    [healthcheck] = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    exec_form = yaml.safe_load(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert exec_form[:2] == ["python", "-c"]
    compile(exec_form[2], "<healthcheck>", "exec")  # valid Python
    assert "/healthz" in exec_form[2]
    exposed = [rest for keyword, rest in instructions if keyword == "EXPOSE"]
    listen = re.search(r"listen: '([^']+)'", DOCKERFILE.read_text(encoding="utf-8"))
    assert listen and listen.group(1).endswith(":" + exposed[0])
    assert f":{exposed[0]}/healthz" in exec_form[2]
