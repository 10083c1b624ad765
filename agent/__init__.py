"""The atlas-backup agent runtime: config, MQTT session, job runner, journal, adapters."""

__version__ = "0.1.0"
