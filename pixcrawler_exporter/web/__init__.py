"""The HTTP side: server, connection handling, authentication, web config, health check."""
