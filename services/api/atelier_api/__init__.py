"""Atelier ratings & reviews HTTP API: `create_app(config)` builds it, `atelier-api` runs it."""
