"""The `atlas-backup` command line client: sends commands to the agent over MQTT, follows
their jobs and prints the agent's state. It imports only `schemas` and the agent's topic
names, never the agent's runtime, so it starts fast and runs on any machine with a
broker login."""
