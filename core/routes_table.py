"""`main.py --routes`: print the route table discovered in the ROUTES_PACKAGE (`routes/`).

Shows, per route, the pattern, what is actually subscribed (with
`$share/{MQTT_GROUP_NAME}/` for shared routes), QoS, the handler and the full
middleware chain in the order it runs. `--json` prints the same as a JSON list.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from config.settings import Settings
from core.discovery import load_routes
from core.middleware import middleware_name
from core.router import Router, handler_name
from core.topics import share_topic

#: Column titles of the text table, in order.
COLUMNS = ("pattern", "subscription", "qos", "shared", "handler", "middleware")


def route_rows(router: Router, group_name: str) -> list[dict[str, Any]]:
    """One dict per route (keys `COLUMNS`), in registration order."""
    rows: list[dict[str, Any]] = []
    for route in router.routes():
        rows.append(
            {
                "pattern": route.pattern,
                "subscription": share_topic(group_name, route.filter)
                if route.shared
                else route.filter,
                "qos": route.qos,
                "shared": route.shared,
                "handler": handler_name(route.handler),
                "middleware": [middleware_name(m) for m in router.middleware_for(route)],
                "max_payload": route.max_payload,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table with a header line."""
    cells = [list(COLUMNS)]
    for row in rows:
        cells.append(
            [
                row["pattern"],
                row["subscription"],
                str(row["qos"]),
                "yes" if row["shared"] else "no",
                row["handler"],
                ", ".join(row["middleware"]) or "-",
            ]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def routes_command(args: argparse.Namespace, settings: Settings) -> int:
    """Print the route table of the ROUTES_PACKAGE (JSON with --json); 0 on success."""
    router = load_routes(settings.routes_package)
    rows = route_rows(router, settings.mqtt_group_name)
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(
            f"No routes were found in {settings.routes_package}: add a module there that defines "
            f"`router = Router()` and registers handlers with @router.on(...)."
        )
        return 0
    print(format_table(rows))
    return 0
