"""The long-running service: source loops, periodic recompute, HTTP API and metrics."""
