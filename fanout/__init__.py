"""Local tooling, never deployed: the CLI (`python -m fanout`), the local pipeline, the demo API, Azurite."""
