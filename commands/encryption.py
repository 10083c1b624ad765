"""Which encryption a backup file gets: pure policy, shared by the export plan and the
agent's export writer."""

from schemas.commands import ExportCommand
from schemas.config import EncryptionConfig, ServiceConfig
from schemas.errors import InvalidCommand
from schemas.manifest import EncryptionMethod


def configured_method(config: EncryptionConfig) -> EncryptionMethod:
    """Recipients win over a passphrase: then the agent host holds no key that decrypts."""
    if config.recipients:
        return "public-key"
    return "symmetric" if config.passphrase_file else "none"


def encryption_for(
    command: ExportCommand, service: ServiceConfig, config: EncryptionConfig
) -> EncryptionMethod:
    """The command's choice, else the service's, else the default; critical is always on."""
    critical = service.criticality == "critical"
    if critical and command.encrypt is False:
        raise InvalidCommand(
            f"{service.volume} is critical ({service.name}) and is never written"
            " unencrypted - at `$.encrypt`"
        )
    wanted = command.encrypt
    if wanted is None:
        wanted = service.encrypt if service.encrypt is not None else config.encrypt_by_default
    if not (wanted or critical):
        return "none"
    method = configured_method(config)
    if method == "none":
        why = "is critical and always encrypted" if critical else "would be encrypted"
        raise InvalidCommand(
            f"{service.volume} {why}, but [encryption] names no passphrase_file and no"
            " recipients - at `$.encrypt`"
        )
    return method
