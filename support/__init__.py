"""Generic helpers every layer may use: errors shared across layers, backoff."""
