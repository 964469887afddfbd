"""Fails on import, as a route module with a bug would."""

raise RuntimeError("boom while importing")
