"""Your topic routes: every module here that defines a module-level `router` is served.

`all_routes_middleware` runs before the routes of every module (and before each
module's own `router.use(...)` middleware).
"""

from app.middleware.request_logging import RequestLogging

all_routes_middleware = [RequestLogging()]
