"""A real Home Assistant core, headless, with its MQTT integration on the test broker.

Installed by deploy/homeassistant/install-ha.sh into its own venv. It runs with
`--skip-pip` (everything it loads is installed beforehand) from a config dir made here:
a configuration.yaml with `http` on a free loopback port and `api`, the MQTT config
entry pointing at the broker in `.storage/core.config_entries`, and an owner with a
long-lived access token in `.storage/auth`. The token is an HS256 JWT signed with the
refresh token's key, exactly what Home Assistant's own "create token" makes, so the REST
API answers without onboarding or a login flow.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HA_VENV = Path(os.environ.get("ATLAS_HA_VENV", "/opt/atlas-ha-venv"))
HASS = HA_VENV / "bin" / "hass"
# First start on this 2-core machine shared with other work; it is measured and printed.
START_TIMEOUT_S = 240.0

CONFIGURATION = """\
homeassistant:
  name: atlas-test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
automation: !include automations.yaml
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: debug
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_jwt(claims: dict[str, Any], key: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(key.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def _storage(key: str, data: dict[str, Any], minor: int = 1) -> str:
    return json.dumps({"version": 1, "minor_version": minor, "key": key, "data": data})


@dataclass
class HomeAssistant:
    """One Home Assistant process with its own config dir; `start()` then `stop()`."""

    config_dir: Path
    http_port: int
    mqtt_port: int
    # automations.yaml: a YAML list of automations.
    automations: str = "[]\n"
    token: str = ""
    started_in_s: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.config_dir / "hass.out"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write_config(self) -> None:
        storage = self.config_dir / ".storage"
        storage.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            CONFIGURATION.format(port=self.http_port)
        )
        (self.config_dir / "automations.yaml").write_text(self.automations)
        user_id, token_id, jwt_key = (
            secrets.token_hex(16),
            secrets.token_hex(16),
            secrets.token_hex(64),
        )
        (storage / "auth").write_text(
            _storage(
                "auth",
                {
                    "users": [
                        {
                            "id": user_id,
                            "group_ids": ["system-admin"],
                            "is_owner": True,
                            "is_active": True,
                            "name": "atlas-test",
                            "system_generated": False,
                            "local_only": False,
                        }
                    ],
                    "groups": [
                        {"id": "system-admin", "name": "Administrators"},
                        {"id": "system-users", "name": "Users"},
                        {"id": "system-read-only", "name": "Read Only"},
                    ],
                    "credentials": [],
                    "refresh_tokens": [
                        {
                            "id": token_id,
                            "user_id": user_id,
                            "client_id": None,
                            "client_name": "atlas-backup tests",
                            "client_icon": None,
                            "token_type": "long_lived_access_token",
                            "created_at": "2026-01-01T00:00:00+00:00",
                            "access_token_expiration": 86400.0,
                            "token": secrets.token_hex(64),
                            "jwt_key": jwt_key,
                            "last_used_at": None,
                            "last_used_ip": None,
                            "credential_id": None,
                            "version": "2024.3.3",
                        }
                    ],
                },
            )
        )
        now = int(time.time())
        self.token = hs256_jwt({"iss": token_id, "iat": now, "exp": now + 86400}, jwt_key)
        (storage / "core.config_entries").write_text(
            _storage(
                "core.config_entries",
                {
                    "entries": [
                        {
                            "entry_id": secrets.token_hex(16),
                            "version": 1,
                            "minor_version": 1,
                            "domain": "mqtt",
                            "title": "test broker",
                            "data": {
                                "broker": "127.0.0.1",
                                "port": self.mqtt_port,
                                "discovery": True,
                                "discovery_prefix": "homeassistant",
                            },
                            "options": {},
                            "pref_disable_new_entities": False,
                            "pref_disable_polling": False,
                            "source": "user",
                            "unique_id": None,
                            "disabled_by": None,
                        }
                    ]
                },
            )
        )

    def start(self) -> None:
        """Start and return once the REST API answers and MQTT is set up."""
        self.write_config()
        began = time.monotonic()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(HASS), "-c", str(self.config_dir), "--skip-pip", "--log-no-color"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = began + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Home Assistant exited:\n{self.log()[-5000:]}")
            try:
                config = self.get("/api/config")
                if "mqtt" in config.get("components", []) and config.get("state") == "RUNNING":
                    self.started_in_s = time.monotonic() - began
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Home Assistant not up in {START_TIMEOUT_S} s:\n{self.log()[-5000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state by entity id, from `/api/states`."""
        return {s["entity_id"]: s for s in self.get("/api/states")}

    def call(self, domain: str, service: str, data: dict[str, Any]) -> Any:
        return self._request("POST", f"/api/services/{domain}/{service}", data)

    def wait_state(self, check: Any, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Poll `/api/states` until `check(states)` holds; the states that made it so."""
        deadline = time.monotonic() + timeout
        states: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            states = self.states()
            if check(states):
                return states
            time.sleep(0.25)
        raise AssertionError(f"Home Assistant's states never matched; last: {states}")
