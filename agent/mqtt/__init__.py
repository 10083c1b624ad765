"""The MQTT side: the session with the broker, topic names, and the publisher of
everything the agent says."""
