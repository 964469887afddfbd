"""Generic helpers with no knowledge of MQTT or queues: backoff, supervisor, logging setup.

Imports only `config/`.
"""
