"""Never imported by the worker: it is outside the registry's package scan."""

from queues import Job

IMPORTED = True


class Evil(Job):
    def handle(self) -> None:
        raise AssertionError("must never run")
