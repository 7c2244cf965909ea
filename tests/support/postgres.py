"""A throwaway PostgreSQL server on a free loopback port: initdb in a temp dir, stopped and
removed afterwards. `python -m tests.support.postgres run -- CMD…` runs CMD with
SIMWIRE_TEST_POSTGRES_URL set and always stops the server, even when CMD fails."""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "simwire"


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1])
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found; scripts/test installs them")


# Under pytest-xdist each worker hands out ports from a range of its own, below the kernel's
# ephemeral range: a port is free when handed out but bound only later by a child process, and
# two workers drawing from the ephemeral range could hand out the same one in between.
_WORKER_PORTS = 2_500
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never handed out twice by this process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        first = 10_000 + int(worker[2:]) % 8 * _WORKER_PORTS
        candidates = random.sample(range(first, first + _WORKER_PORTS), _WORKER_PORTS)
    else:
        candidates = [0] * 20
    for candidate in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port")


@dataclass
class PostgresServer:
    directory: Path
    port: int
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.run_as,
                str(_bin_dir() / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb + start; as root the server runs as the `postgres` system user (it refuses root)."""
    bin_dir = _bin_dir()
    directory = Path(tempfile.mkdtemp(prefix="simwire-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
    port = free_port()
    server = PostgresServer(directory=directory, port=port, run_as=run_as)
    try:
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "initdb"),
                "-D",
                str(directory / "data"),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(directory / "data"),
                "-o",
                options,
                "-l",
                str(directory / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
    except BaseException:
        server.stop()
        raise
    return server


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "run" or argv[1] != "--":
        print("usage: python -m tests.support.postgres run -- COMMAND [ARGS…]", file=sys.stderr)
        return 2
    server = start_postgres()
    print(f"PostgreSQL {_bin_dir().parent.name} on 127.0.0.1:{server.port}", flush=True)
    try:
        env = {**os.environ, "SIMWIRE_TEST_POSTGRES_URL": server.url}
        return subprocess.call(argv[2:], env=env)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
