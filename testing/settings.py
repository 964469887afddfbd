"""`use_settings(...)`: a test's own settings, with nothing read from the environment or `.env`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from config.settings import Settings, load_settings
from queues import connections


@contextmanager
def use_settings(**variables: str) -> Iterator[Settings]:
    """Settings made of these variables and the defaults only, in force while inside.

    `use_settings(SQLITE_PATH=str(tmp_path / "app.db"), QUEUE_CONNECTION="sync")`:
    the queues and the app's database (`app.models.app_engine`) use them; the
    previous settings, and fresh connections, come back after. A wrong value
    raises `ConfigError` naming it, as at start-up.
    """
    with connections.configured(load_settings(variables, dotenv_path=None)) as settings:
        yield settings
