"""A private PostgreSQL cluster in a directory we own, listening on 127.0.0.1 only.

It must never touch the cluster the machine happens to run (the system's one on 5432):
it runs only the server programs it finds, on the data directory it is given.

PostgreSQL refuses to run as root, so when we are root its programs run as the
``postgres`` system user (created when missing), and the data directory is handed to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from devkit.localstack.common import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    LocalStackError,
    free_port,
    log_size,
    log_tail,
    pid_alive,
    start_on_a_free_port,
    track,
    untrack,
)
from rules.errors import ConfigError

log = logging.getLogger(__package__)  # the package's name, as before it was split

PG_SYSTEM_USER = "postgres"
PG_SUPERUSER = "postgres"
PG_MAX_CONNECTIONS = 300  # the worker pool needs >= 200
FILE_COPY_MIN_VERSION = 150000  # CREATE DATABASE ... STRATEGY appeared in PostgreSQL 15


def find_pg_bindir() -> Path:
    """The directory holding PostgreSQL's server programs (initdb, pg_ctl, postgres)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))

    def version_key(path: Path) -> tuple[int, ...]:
        digits = re.findall(r"\d+", path.parent.name)
        return tuple(int(d) for d in digits)

    candidates.extend(
        sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ConfigError(
        "PostgreSQL server programs (initdb, pg_ctl) not found: install Debian's 'postgresql' "
        "package (scripts/bootstrap.sh does it), or put its bin directory on PATH"
    )


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/bin/false", name],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(name)


def _make_traversable(path: Path) -> None:
    """Let other users traverse (not list) every parent of ``path``: postgres must reach it."""
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.warning("granting traverse permission", extra={"path": str(parent)})
            parent.chmod(mode | stat.S_IXOTH)


class PostgresServer:
    """A private PostgreSQL cluster in ``datadir`` (its PGDATA), listening on 127.0.0.1 only.

    The data is kept between runs; ``start()`` runs initdb only when ``datadir`` is empty.
    ``fast_unsafe`` trades durability for speed (fsync off): for throwaway test clusters.
    """

    def __init__(self, datadir: Path, *, port: int | None = None, fast_unsafe: bool = False):
        self.datadir = Path(datadir).absolute()
        self.fast_unsafe = fast_unsafe
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self.running = False
        self.bindir = find_pg_bindir()
        self.logfile = self.datadir / "server.log"
        self._as_user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._as_user = _ensure_system_user(PG_SYSTEM_USER)

    # -- process plumbing ------------------------------------------------------------

    def _run(self, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._as_user is not None:
            kwargs = {
                "user": self._as_user.pw_uid,
                "group": self._as_user.pw_gid,
                "extra_groups": [],
            }
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        proc: subprocess.CompletedProcess[str] = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            cwd="/",  # the postgres user may not be allowed into our working directory
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
        if check and proc.returncode != 0:
            raise LocalStackError(
                f"{args[0]} failed (exit {proc.returncode}) for {self.datadir}:\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def _prepare_datadir(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._as_user is not None:
            _make_traversable(self.datadir)
            uid, gid = self._as_user.pw_uid, self._as_user.pw_gid
            if self.datadir.stat().st_uid != uid:
                for dirpath, dirnames, filenames in os.walk(self.datadir):
                    os.chown(dirpath, uid, gid)
                    for name in dirnames + filenames:
                        os.lchown(os.path.join(dirpath, name), uid, gid)
        self.datadir.chmod(0o700)

    def _initdb_if_empty(self) -> None:
        version_file = self.datadir / "PG_VERSION"
        if version_file.exists():
            self._check_version(version_file.read_text().strip())
            return
        if any(self.datadir.iterdir()):
            raise LocalStackError(
                f"{self.datadir} is neither empty nor a PostgreSQL data directory; "
                "remove it or choose another directory"
            )
        args = ["initdb", "-D", str(self.datadir), "-U", PG_SUPERUSER, "-A", "trust"]
        args += ["-E", "UTF8", "--locale=C"]
        if self.fast_unsafe:
            args.append("--no-sync")
        self._run(args)
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# trigger-engine: settings rewritten on every start\n")
            conf.write("include_if_exists = 'engine.conf'\n")

    def _check_version(self, data_version: str) -> None:
        out = self._run(["postgres", "--version"]).stdout
        match = re.search(r"(\d+)", out.split(")")[-1])
        if match and match.group(1) != data_version.split(".")[0]:
            raise LocalStackError(
                f"{self.datadir} holds PostgreSQL {data_version} data but the server programs "
                f"in {self.bindir} are version {match.group(1)}; remove the directory to start "
                "afresh (its data will be lost)"
            )

    def _write_settings(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",  # paths can exceed the socket limit; TCP only
            "max_connections": str(PG_MAX_CONNECTIONS),
            "timezone": "'UTC'",
        }
        if self.fast_unsafe:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        conf = self.datadir / "engine.conf"
        conf.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        if self._as_user is not None:
            os.chown(conf, self._as_user.pw_uid, self._as_user.pw_gid)

    def _stop_leftover(self) -> None:
        """A postmaster left running in our datadir by a killed earlier run is ours: stop it."""
        pid = self.pid
        if pid is not None and pid_alive(pid):
            log.warning("stopping a leftover server", extra={"pid": pid, "path": str(self.datadir)})
            self._pg_ctl_stop("fast")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        args = ["pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.logfile)]
        return self._run([*args, "-w", "-t", str(START_TIMEOUT_S)], check=False)

    def _pg_ctl_stop(self, mode: str) -> subprocess.CompletedProcess[str]:
        args = ["pg_ctl", "stop", "-D", str(self.datadir), "-m", mode]
        return self._run([*args, "-w", "-t", str(STOP_TIMEOUT_S)], check=False)

    # -- public API ------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, or None when there is none."""
        try:
            first = (self.datadir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, IndexError, ValueError):
            return None

    def start(self) -> None:
        """initdb when the datadir is empty, then start and wait until it accepts connections."""
        if self.running:
            return
        self._prepare_datadir()
        self._initdb_if_empty()
        self._stop_leftover()
        start_on_a_free_port(
            self,
            self._launch,
            fixed_port=self._fixed_port,
            name="PostgreSQL",
            where=f"from {self.datadir}",
            before_raise=self._stop_leftover,
        )

    def _launch(self) -> str | None:
        """One start on ``self.port``: None once it runs, else what pg_ctl printed."""
        self._write_settings()
        proc = self._pg_ctl_start()
        if proc.returncode != 0:
            return f"{proc.stdout}{proc.stderr}"
        self.running = True
        track(self)
        return None

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (idempotent); ``mode='immediate'`` simulates a crash."""
        pid = self.pid
        if pid is not None and pid_alive(pid):
            proc = self._pg_ctl_stop(mode)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                raise LocalStackError(
                    f"PostgreSQL (pid {pid}) did not stop:\n{proc.stdout}{proc.stderr}"
                )
        self.running = False
        untrack(self)

    def restart(self) -> None:
        """Stop (fast) and start again on the same port; connections are cut."""
        self.stop()
        offset = log_size(self.logfile)
        proc = self._pg_ctl_start()
        if proc.returncode != 0:
            raise LocalStackError(
                f"PostgreSQL failed to restart on 127.0.0.1:{self.port}:\n"
                f"{proc.stdout}{proc.stderr}--- {self.logfile} (tail) ---\n"
                f"{log_tail(self.logfile, offset)}"
            )
        self.running = True
        track(self)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` as the superuser."""
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def database_exists(self, name: str) -> bool:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            return row is not None

    def create_database(
        self, name: str, *, template: str | None = None, exist_ok: bool = False
    ) -> str:
        """Create ``name`` (a copy of ``template`` when given) and return its DSN."""
        if exist_ok and self.database_exists(name):
            return self.dsn(name)
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if template is not None:
                query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
                # With fsync off, copying files is ~5x faster than WAL-logging every block.
                if self.fast_unsafe and conn.info.server_version >= FILE_COPY_MIN_VERSION:
                    query = sql.SQL("{} STRATEGY FILE_COPY").format(query)
            conn.execute(query)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, closing its connections first."""
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(query)
