"""Incus's lifecycle event stream: what tells the agent that something it read has changed.

Read over a websocket on the same unix socket or HTTPS endpoint as the API. Incus files
the events of a project's volumes under `default` when the project has no volumes of its
own (`features.storage.volumes=false`), so events of every project are read and those of
the configured project and `default` are kept.
"""

import json
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import WebSocketException

from agent.config import IncusConfig
from schemas.errors import IncusFailure

log = logging.getLogger(__name__)

EVENTS_PATH = "/1.0/events?type=lifecycle&all-projects=true"
# What a volume listing shows: its volumes, their snapshots and the instances using them.
CHANGES_LISTINGS = ("storage-volume-", "instance-")


@dataclass(frozen=True)
class LifecycleEvent:
    action: str  # e.g. "storage-volume-snapshot-created"
    project: str
    source: str  # the API path of what changed

    def changes_volume_listing(self) -> bool:
        return self.action.startswith(CHANGES_LISTINGS)


def parse_event(raw: str | bytes, projects: frozenset[str]) -> LifecycleEvent | None:
    """The lifecycle event in a message, if it concerns one of `projects`."""
    try:
        message: Any = json.loads(raw)
        metadata = message["metadata"]
        event = LifecycleEvent(
            action=str(metadata["action"]),
            project=str(message.get("project") or "default"),
            source=str(metadata.get("source", "")),
        )
    except (ValueError, KeyError, TypeError):
        log.debug("ignored an Incus event that is not a lifecycle event")
        return None
    return event if event.project in projects else None


def _tls_context(config: IncusConfig) -> ssl.SSLContext:
    """The client side of the HTTPS API: the client certificate, and the server checked
    against `server_cert_file` alone when one is set (Incus's certificate is self-signed
    and names no host the agent dials)."""
    if config.server_cert_file:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(config.server_cert_file)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    else:
        context = ssl.create_default_context()
    if config.client_cert_file and config.client_key_file:
        context.load_cert_chain(config.client_cert_file, config.client_key_file)
    return context


@asynccontextmanager
async def _connected(config: IncusConfig) -> AsyncIterator[ClientConnection]:
    if config.url:
        base = urlparse(config.url.rstrip("/"))
        uri = f"wss://{base.netloc}{base.path}{EVENTS_PATH}"
        async with connect(uri, ssl=_tls_context(config), max_size=1 << 20) as ws:
            yield ws
    else:
        uri = f"ws://localhost{EVENTS_PATH}"
        async with unix_connect(config.socket, uri, max_size=1 << 20) as ws:
            yield ws


class IncusEvents:
    """Lifecycle events of the configured project, one connection at a time."""

    def __init__(self, config: IncusConfig) -> None:
        self._config = config
        self._projects = frozenset({config.project, "default"})

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[AsyncIterator[LifecycleEvent]]:
        """Open the stream; events read after this returns are not missed. Raises
        IncusFailure when Incus cannot be reached or the stream breaks."""
        try:
            async with _connected(self._config) as ws:
                yield self._events(ws)
        except (OSError, WebSocketException, ssl.SSLError) as exc:
            raise IncusFailure(f"the Incus event stream broke: {exc}") from exc

    async def _events(self, ws: ClientConnection) -> AsyncIterator[LifecycleEvent]:
        async for raw in ws:
            event = parse_event(raw, self._projects)
            if event is not None:
                yield event
