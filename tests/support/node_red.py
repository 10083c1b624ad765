"""A real Node-RED, headless, running deploy/node-red/atlas-backup-flow.json.

Installed by deploy/node-red/install-node-red.sh. It runs with the project's settings.js
(no editor, the admin HTTP API on a free loopback port) from a user dir made here, with
the flow's broker and notification file given by the environment variables it reads.
"""

import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "node-red"
FLOW = DEPLOY / "atlas-backup-flow.json"
SETTINGS = DEPLOY / "settings.js"
NODE_RED_DIR = Path(os.environ.get("ATLAS_NODE_RED_DIR", "/opt/atlas-node-red"))
NODE_RED = NODE_RED_DIR / "node_modules" / ".bin" / "node-red"
START_TIMEOUT_S = 60.0


@dataclass
class NodeRed:
    """One Node-RED process with its own user dir; `start()` then `stop()`."""

    user_dir: Path
    http_port: int
    mqtt_port: int
    started_in_s: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def notify_file(self) -> Path:
        return self.user_dir / "notifications.log"

    @property
    def log_path(self) -> Path:
        return self.user_dir / "node-red.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start Node-RED and return once its flow is connected to the broker."""
        self.user_dir.mkdir(parents=True, exist_ok=True)
        # A copy: Node-RED may write the flow file back; the repository's stays as it is.
        flow = self.user_dir / "flows.json"
        shutil.copy(FLOW, flow)
        env = {
            **os.environ,
            "NODE_RED_PORT": str(self.http_port),
            "ATLAS_MQTT_HOST": "127.0.0.1",
            "ATLAS_MQTT_PORT": str(self.mqtt_port),
            "ATLAS_BACKUP_NOTIFY_FILE": str(self.notify_file),
        }
        self._log = self.log_path.open("wb")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [
                str(NODE_RED),
                "--userDir",
                str(self.user_dir),
                "--settings",
                str(SETTINGS),
                str(flow),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = started + START_TIMEOUT_S
        while "Connected to broker" not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"Node-RED exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("Node-RED did not connect to the broker")
            time.sleep(0.1)
        self.started_in_s = time.monotonic() - started

    def inject(self, node_id: str) -> None:
        """Trigger an inject node as its button in the editor does."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/inject/{node_id}", method="POST", data=b""
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200, answer.status

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
