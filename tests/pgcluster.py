"""A throwaway PostgreSQL cluster for fault tests: its own data directory, port and socket, so a test
may stop and start it mid-traffic without touching any other server.

Needs the PostgreSQL server binaries (`initdb`, `pg_ctl`); `pg_cluster()` skips the test with the
reason when they are missing. PostgreSQL refuses to run as root: under root (a CI container) the
cluster runs as the `postgres` system user instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from capsearch.db.session import create_engine
from tests.browserkit import free_port

START_TIMEOUT_S = 60


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    # Debian keeps the server binaries off PATH, one directory per major version: take the newest.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


class PgCluster:
    def __init__(self, bin_dir: Path, root: Path, port: int, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = port
        self._run_as = run_as

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self._run_as is not None:
            cmd = ["runuser", "-u", self._run_as, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S + 30)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start (again) on the same port; returns once it accepts connections."""
        options = f"-k {self.root} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        log = str(self.root / "server.log")
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            log,
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop now: `fast` ends open sessions (what an outage looks like to the app)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(START_TIMEOUT_S), "stop")

    async def create_database(self, name: str) -> str:
        engine = create_engine(self.admin_url).execution_options(isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        return self.url(name)


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """initdb into a fresh directory, start on a free port, stop and delete it all afterwards."""
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("needs the PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    run_as = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL refuses to run as root and there is no `postgres` user to run it as")
        if shutil.which("runuser") is None:
            pytest.skip("PostgreSQL refuses to run as root and `runuser` is missing")
        run_as = user.pw_name
    # Not pytest's tmp_path: its parents are private to the test user, and the socket path must be short.
    root = Path(tempfile.mkdtemp(prefix="capsearch-pg-"))
    if run_as is not None:
        os.chown(root, pwd.getpwnam(run_as).pw_uid, pwd.getpwnam(run_as).pw_gid)
    cluster = PgCluster(bin_dir, root, free_port(), run_as)
    started = False
    try:
        cluster.init()
        cluster.start()
        started = True
        yield cluster
    finally:
        if started:
            with contextlib.suppress(RuntimeError):  # already stopped by the test
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
