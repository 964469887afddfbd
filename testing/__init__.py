"""Test your app without servers: a client for your routes, a fake queue and a sync queue.

* `TestClient(router).publish(topic, payload, ...)`: the message goes through
  the route, its middleware and handler in-process, under the intake's rules
  (retries, dead letters); the result tells what was published and dead-lettered.
* `fake_queue()`: records every dispatched job (validated, never stored or run)
  for `assert_dispatched(StoreReading, device_id="d1")`.
* `sync_queue()`: every dispatched job runs at once, as QUEUE_CONNECTION=sync does.
* `use_settings(SQLITE_PATH=..., ...)`: settings of the test's own, not the
  environment's (for example a fresh SQLite file for the app's database).
"""

from queues.fake import DispatchedJob, FakeQueue, fake_queue
from queues.sync import sync_queue
from testing.client import Published, Result, TestClient
from testing.settings import use_settings

__all__ = [
    "DispatchedJob",
    "FakeQueue",
    "Published",
    "Result",
    "TestClient",
    "fake_queue",
    "sync_queue",
    "use_settings",
]
