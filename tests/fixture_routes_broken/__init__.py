"""A routes package with one module that fails to import."""
