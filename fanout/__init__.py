"""Shared core of the fan-out app: settings, storage clients, the chunk contract, run records."""
