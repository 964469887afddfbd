"""A routes package with no routes."""
