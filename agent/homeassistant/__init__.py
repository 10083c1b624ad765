"""Home Assistant MQTT discovery: the agent's entities, built from topics it publishes."""
