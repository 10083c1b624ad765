"""Wire types of the public MQTT contract (API.md v1). Imports only msgspec."""
