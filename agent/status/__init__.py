"""The states the agent publishes about what it protects: per volume, from Incus and
the store."""
