"""Route discovery: import every module of the routes package and merge their routers.

Each module under `routes/` that defines a module-level `router` (a `Router`)
contributes its routes; modules without one (helpers) are imported and
skipped. Modules are imported in name order, each package before its contents, so the
merged table, and any duplicate-filter error, is the same on every start.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from core.router import Router

#: Name of the module-level attribute a route module defines.
ROUTER_ATTRIBUTE = "router"


class RouteDiscoveryError(ImportError):
    """A route module failed to import or declares a bad `router`; names the module."""


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise RouteDiscoveryError(
            f"cannot import route module {name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def route_modules(package: str = "routes") -> list[ModuleType]:
    """The package itself and every module below it, imported, in name order."""
    root = _import(package)
    modules = [root]
    pending = [root]
    while pending:
        parent = pending.pop(0)
        search_path = getattr(parent, "__path__", None)
        if search_path is None:
            continue  # a plain module has no sub-modules
        for info in sorted(pkgutil.iter_modules(search_path), key=lambda m: m.name):
            module = _import(f"{parent.__name__}.{info.name}")
            modules.append(module)
            if info.ispkg:
                pending.append(module)
    return modules


def load_routes(package: str = "routes") -> Router:
    """One Router holding the routes of every module's `router` in `package`.

    Import errors propagate as `RouteDiscoveryError` naming the module; a
    `router` attribute that is not a Router, or two modules routing the same
    filter, is an error naming the module too.
    """
    merged = Router()
    seen: set[int] = set()
    for module in route_modules(package):
        candidate = getattr(module, ROUTER_ATTRIBUTE, None)
        if candidate is None or id(candidate) in seen:
            continue  # no routes here, or a router re-exported by another module
        if not isinstance(candidate, Router):
            raise RouteDiscoveryError(
                f"route module {module.__name__!r}: `router` must be a core.router.Router, "
                f"got {type(candidate).__name__}"
            )
        seen.add(id(candidate))
        try:
            merged.include(candidate)
        except ValueError as exc:
            raise RouteDiscoveryError(f"route module {module.__name__!r}: {exc}") from exc
    return merged
