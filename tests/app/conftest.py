"""Fixtures of the app's tests: a fresh database file per test, no server."""

import pytest

from testing import use_settings


@pytest.fixture
def app_database(tmp_path):
    """The app's database on a fresh SQLite file; jobs dispatched inside run at once."""
    with use_settings(SQLITE_PATH=str(tmp_path / "app.db"), QUEUE_CONNECTION="sync") as settings:
        yield settings
