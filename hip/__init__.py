"""Shared core of the provincial health-data CDC platform: settings, errors, catalogue, codec, CLI."""
