"""Route modules used by tests/test_discovery.py (a stand-in for routes/)."""
