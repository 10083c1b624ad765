"""TLS and credentials for the broker connection: verify the broker and its name, close
a socket whose handshake failed, read the password from its file."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from agent.config import MqttConfig, read_secret
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike


def tls_pending(sock: SocketLike) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def credentials(config: MqttConfig) -> tuple[str, str | None]:
    """The username and the password read from `password_file`; never logged."""
    if not config.username:
        if config.password_file:
            raise ConfigError("mqtt.password_file is set but mqtt.username is not")
        return "", None
    password = read_secret(config.password_file) if config.password_file else None
    return config.username, password


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho drops such a socket without closing it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """TLS verifying the broker (against `tls_ca_file`, else the system CAs) and its name."""
    if not (config.tls_ca_file or config.tls_cert_file):
        return None
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file or None)
        context.sslsocket_class = _ClosingSSLSocket
        if config.tls_cert_file:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt TLS files cannot be loaded: {exc}") from None
    return context
