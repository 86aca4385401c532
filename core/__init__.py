"""The bottom layer: settings, errors, retry, the storage contract, run records and status, storage clients."""
