"""Docker Engine API access for sources: the engine client, container exec streams, volumes."""
