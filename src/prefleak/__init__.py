"""prefleak: watches LLM evaluations for preference leakage and tells on-call through Prometheus."""

__version__ = "0.1.0"
