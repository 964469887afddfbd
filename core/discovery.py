"""Route discovery: import every module of the routes package and merge their routers.

Each module under `routes/` that defines a module-level `router` (a `Router`)
contributes its routes; modules without one (helpers) are imported and
skipped. Modules are imported in name order, each package before its contents, so the
merged table, and any duplicate-filter error, is the same on every start.

`router.use(...)` applies to the routes of that router, which is one module's.
Middleware for every route of the app goes in a list named
`all_routes_middleware` in the package's `__init__.py`: it runs first, before
each module's own (`routes/__init__.py`: `all_routes_middleware = [RequestLogging()]`).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from core.router import Router

#: Name of the module-level attribute a route module defines.
ROUTER_ATTRIBUTE = "router"
#: Name of the list, in the routes package's `__init__.py`, of middleware run for every route.
ALL_ROUTES_MIDDLEWARE = "all_routes_middleware"


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

    The package's `all_routes_middleware` runs before every route's own chain.
    Import errors propagate as `RouteDiscoveryError` naming the module; a
    `router` attribute that is not a Router, or two modules routing the same
    filter, is an error naming the module too.
    """
    merged = Router()
    modules = route_modules(package)
    _use_package_middleware(merged, modules[0])
    seen: set[int] = set()
    for module in modules:
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


def _use_package_middleware(router: Router, package: ModuleType) -> None:
    """Make the package's `all_routes_middleware` the global middleware of `router`."""
    middleware = getattr(package, ALL_ROUTES_MIDDLEWARE, None)
    if middleware is None:
        return
    if not isinstance(middleware, list | tuple):
        raise RouteDiscoveryError(
            f"{package.__name__}.{ALL_ROUTES_MIDDLEWARE} must be a list of middleware, "
            f"got {type(middleware).__name__}"
        )
    try:
        router.use(*middleware)
    except TypeError as exc:
        raise RouteDiscoveryError(f"{package.__name__}.{ALL_ROUTES_MIDDLEWARE}: {exc}") from exc
