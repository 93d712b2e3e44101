"""Pydantic events and the domain types built from them."""
