"""Background jobs: subclass `Job`, queue it with `dispatch`, run it with a worker."""

from queues.dispatcher import dispatch, dispatch_many
from queues.job import Job

__all__ = ["Job", "dispatch", "dispatch_many"]
