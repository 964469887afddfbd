"""Connections to the backing services: the SQL engine and queue tables, the Redis client.

Imports only `support/` and `config/`; `queues/` and `app/` build on it.
"""
