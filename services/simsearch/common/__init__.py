"""Shared building blocks: settings, storage, imaging, telemetry, errors, wire models.

Nothing here defines HTTP routes; services compose these pieces.
"""
