"""The agent as a real process, on a config written by `tests.support.harness`."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[2]


@dataclass
class AgentProcess:
    config: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: TextIO | None = field(default=None, repr=False)

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the agent; `env` adds variables, e.g. ATLAS_BACKUP_FAULT=<point>."""
        self._log = self.log_path.open("a")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "agent", "--config", str(self.config)],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
        return code

    @property
    def pid(self) -> int:
        assert self.process is not None, "the agent is not running"
        return self.process.pid

    def wait_exit(self, timeout: float) -> int:
        """Wait for the agent to end by itself (a fault point, a signal); its exit code."""
        assert self.process is not None, "the agent is not running"
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
