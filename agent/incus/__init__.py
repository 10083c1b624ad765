"""The Incus adapter: the REST client, its JSON conversion, and the async facade the
commands' Incus port is."""
