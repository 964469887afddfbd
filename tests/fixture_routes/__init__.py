"""Route modules used by tests/test_discovery.py (a stand-in for routes/).

`all_routes_middleware` runs before every route of every module below.
"""

from typing import Any

from core.message import Message
from core.middleware import Middleware, Next

#: Topics seen by the package-wide middleware, in order.
stamped: list[str] = []


class Stamp(Middleware):
    """Notes each topic it sees, then passes the message on."""

    def handle(self, message: Message, next: Next) -> Any:
        stamped.append(message.topic)
        return next(message)


all_routes_middleware = [Stamp()]
