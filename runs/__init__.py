"""Run operations: one module per verb (start, status, cancel, listing, purge, redrive, local, sweep), each
called alike by the HTTP handlers (api/), the triggers (function_app.py) and the command line (fanout/)."""
