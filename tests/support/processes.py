"""`simwire serve` as a child process: for tests where a crash must be a dead process (kill -9,
a named crash point, a segfault), not a dead test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.live import eventually
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """A server on a free loopback port (or `port`: a restart where the last one listened)
    over `database_url`, with `env` on top of this process's environment (`SIMWIRE_*`
    settings); its stderr goes to `log_path` if given."""

    def __init__(
        self,
        database_url: str,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/phone/ws"
        self._log = log_path.open("w") if log_path else None
        settings = {"SIMWIRE_DATABASE_URL": database_url, "SIMWIRE_LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, **settings, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    async def ready(self, timeout_s: float = 30) -> None:
        """Waits until `/readyz` answers 200; fails at once if the process exits."""

        async def answers() -> bool:
            assert self.alive, f"the server exited with {self.process.returncode} while starting"
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{self.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(answers, timeout_s=timeout_s, interval_s=0.1)

    async def exit_code(self, timeout_s: float = 30) -> int:
        """Waits for the process to end by itself; its return code (−9 for SIGKILL)."""
        await eventually(lambda: not self.alive, timeout_s=timeout_s)
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL, as `kill -9`: no shutdown code runs."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
