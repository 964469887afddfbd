"""The allowlist of runnable job classes.

Workers never import a module named by a payload: a job class is runnable only
if it was found by importing the jobs package (the JOBS_PACKAGE setting, from
the environment or `.env`; default `app.jobs`) and registered under its name. A
payload naming anything else is failed with the reason and nothing is imported.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading
from types import ModuleType

from queues.connections import current_settings
from queues.job import Job

#: The queue of a job class that does not name one (`Job.queue`).
DEFAULT_QUEUE = "default"


class UnknownJobError(LookupError):
    """A job name is not in the registry; the message names it and the package."""


class DuplicateJobError(ValueError):
    """Two different classes claim the same job name."""


def default_package() -> str:
    """The jobs package of the configured settings (JOBS_PACKAGE, default `app.jobs`)."""
    return current_settings().jobs_package


class JobRegistry:
    """Job classes by name, filled from one package (and explicit `register` calls).

    `load()` imports every module of the package (recursively) once and registers
    each `Job` subclass defined there, skipping classes marked `abstract = True`.
    """

    def __init__(self, package: str | None = None) -> None:
        self.package = package or default_package()
        self._classes: dict[str, type[Job]] = {}
        self._loaded = False
        self._lock = threading.Lock()

    def register(self, cls: type[Job]) -> type[Job]:
        """Register one class under `cls.job_name()`; usable as a decorator."""
        if not (isinstance(cls, type) and issubclass(cls, Job)):
            raise TypeError(f"{cls!r} is not a Job subclass")
        name = cls.job_name()
        existing = self._classes.get(name)
        if existing is not None and existing is not cls:
            raise DuplicateJobError(
                f"job name {name!r} is used by both {existing.__module__}.{existing.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}; set a distinct `name` on one of them"
            )
        self._classes[name] = cls
        return cls

    def load(self) -> JobRegistry:
        """Import the package's modules and register their jobs (once)."""
        with self._lock:
            if self._loaded:
                return self
            package = importlib.import_module(self.package)
            for module in _walk(package):
                for _, obj in inspect.getmembers(module, inspect.isclass):
                    if (
                        issubclass(obj, Job)
                        and obj is not Job
                        and obj.__module__ == module.__name__
                        and not obj.__dict__.get("abstract", False)
                    ):
                        self.register(obj)
            self._loaded = True
        return self

    def resolve(self, name: str) -> type[Job]:
        """The class registered as `name`; `UnknownJobError` otherwise (nothing imported)."""
        self.load()
        cls = self._classes.get(name)
        if cls is None:
            raise UnknownJobError(f"unknown job {name!r}: not registered in {self.package}")
        return cls

    def names(self) -> list[str]:
        """Every registered job name, sorted."""
        self.load()
        return sorted(self._classes)

    def classes(self) -> list[type[Job]]:
        """Every registered class, by name."""
        self.load()
        return [self._classes[name] for name in sorted(self._classes)]

    def queues(self) -> list[str]:
        """The queues of the registered job classes: what a worker works by default.

        In registry order (classes by job name), each queue once. `default` comes
        last, unless a class declares `queue = "default"` itself: then it takes
        that class's place.
        """
        names: list[str] = []
        for cls in self.classes():
            inherited = not any("queue" in k.__dict__ for k in cls.__mro__ if k is not Job)
            if cls.queue == DEFAULT_QUEUE and inherited:
                continue
            if cls.queue not in names:
                names.append(cls.queue)
        if DEFAULT_QUEUE not in names:
            names.append(DEFAULT_QUEUE)
        return names

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._classes


def _walk(package: ModuleType) -> list[ModuleType]:
    modules = [package]
    paths = getattr(package, "__path__", None)
    if paths is None:
        return modules
    for info in pkgutil.walk_packages(paths, prefix=package.__name__ + "."):
        modules.append(importlib.import_module(info.name))
    return modules


_registries: dict[str, JobRegistry] = {}
_registries_lock = threading.Lock()


def get_registry(package: str | None = None) -> JobRegistry:
    """The process-wide registry of `package` (default: `default_package()`), loaded."""
    name = package or default_package()
    with _registries_lock:
        registry = _registries.get(name)
        if registry is None:
            registry = _registries[name] = JobRegistry(name)
    return registry.load()
