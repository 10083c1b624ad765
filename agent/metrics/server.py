"""Serves a registry at `/metrics` on the configured address, in a thread of its own."""

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


def split_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:9464` or `[::1]:9464` -> (host, port); the config checked the form."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(listen: str, registry: CollectorRegistry) -> MetricsServer | None:
    """Start serving, or log why not and return None: the agent's backups matter more than
    its metrics, and Prometheus's own `up` (the `AtlasBackupAgentDown` alert) says so."""
    host, port = split_listen(listen)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("cannot serve metrics on %s: %s", listen, exc)
        return None
    log.info("serving Prometheus metrics on http://%s/metrics", listen)
    return MetricsServer(server, thread)
