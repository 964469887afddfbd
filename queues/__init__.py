"""Background jobs: subclass `Job`, queue it with `dispatch`, run it with a worker."""

from queues.dispatcher import dispatch, dispatch_many
from queues.job import Job
from queues.workflows import batch, chain

__all__ = ["Job", "batch", "chain", "dispatch", "dispatch_many"]
