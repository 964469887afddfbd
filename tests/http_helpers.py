"""Reading a process's HTTP endpoints in tests: JSON, Prometheus samples, waiting for them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from core.broker import free_port

__all__ = ["free_port", "get", "get_json", "sample", "scrape", "wait_for"]

#: Seconds a test waits for an endpoint to say what it expects.
WAIT = 30.0


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of one request; connection errors give status 0."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def get_json(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """(status, decoded JSON body); None for a body that is not JSON."""
    status, body = get(url, method, headers)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of `/metrics`: (name, labels) -> value."""
    status, body = get(url)
    assert status == 200, f"{url} answered {status}"
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def wait_for(check: Callable[[], Any], timeout: float = WAIT, interval: float = 0.2) -> Any:
    """Call `check` until it returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
