"""The HTTP API: routes, problem+json answers, and the table from exceptions to statuses."""
