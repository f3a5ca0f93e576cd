"""Shared test helpers: in-memory fixtures that unit and HTTP-level tests both use."""
