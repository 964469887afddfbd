"""`TestClient`: publish to your routes in-process, with no broker, and see what happened.

```python
client = TestClient(router)
result = client.publish("devices/d1/telemetry", {"value": 21.5}, qos=1)
assert result.handled and not result.dead_lettered
```

A message goes through what `--run` does with it (core/delivery.py, the rules
the intake applies): the best route, its middleware, the handler (`def` or
`async def`, typed body parsed), then

* a `PayloadError` (bad JSON, a body that fails validation, a payload over
  `max_payload`) dead-letters it at once;
* any other exception retries the handler up to `MQTT_HANDLER_RETRIES`
  attempts - at once, the intake's backoff is not slept - then dead-letters it;
* a backend outage (Redis or SQL unreachable) leaves it unacknowledged, as the
  intake would hold it, instead of waiting for the backend to come back.

What the handler dispatches goes through the queues' outbox as in production:
recorded per attempt (an attempt that raises leaves nothing), then stored when
the message is finished - into the real queue, or into a `fake_queue()` or
`sync_queue()` when one is active. What the handler publishes or replies, and
the dead letter, are captured instead of sent.

The message arrives at the QoS the broker would deliver: at most the route's
QoS, and at most 1 (routes asking for QoS 2 are subscribed at QoS 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from backends.mqtt_message import publish_properties
from config.settings import Settings
from core.delivery import Delivery, Inbound, IntakeStats, Outbox, Outcome
from core.discovery import load_routes
from core.message import Message, MessageProperties
from core.mqtt import MAX_SUBSCRIBE_QOS
from core.router import Router
from core.topics import validate_publish_topic
from queues import connections
from queues.outbox import DispatchOutbox

#: What `publish` accepts as a payload: bytes as they are, text as UTF-8, JSON values as JSON.
Payload = bytes | str | dict[str, Any] | list[Any]


@dataclass(frozen=True)
class Published:
    """One message the handler published (or replied), or a dead letter, as it would be sent."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: MessageProperties | None = None  #: MQTT 5 properties the handler gave

    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.payload)


@dataclass
class Result:
    """What became of one published message."""

    topic: str
    qos: int  #: the QoS it was delivered with
    route: str | None  #: the pattern of the route that matched, or None
    params: dict[str, str]  #: the route's parameters
    handled: bool  #: a route matched and its handler returned
    acknowledged: bool  #: finished (handled, unmatched or dead-lettered); False while held
    attempts: int  #: handler attempts made
    error: BaseException | None  #: why it was dead-lettered or held
    dead_letter: Published | None  #: the dead letter that was published, if any
    published: list[Published] = field(default_factory=list)  #: what the handler published

    @property
    def dead_lettered(self) -> bool:
        """True if the message went to the dead-letter topic."""
        return self.dead_letter is not None

    def published_to(self, topic: str) -> list[Published]:
        """What the handler published to `topic` (a reply goes to the message's
        ResponseTopic, or to `{topic}/reply`)."""
        return [message for message in self.published if message.topic == topic]


class TestClient:
    """Feeds messages to routes in-process under the intake's rules; see the module docstring.

    `router` is a `Router` (a module's `router`, for its routes only), or the
    name of a routes package to load as `--run` does (default: ROUTES_PACKAGE,
    so every route with the package-wide middleware). `settings` supplies
    ROUTES_PACKAGE, MQTT_HANDLER_RETRIES, the dead-letter topic and limits
    (default: the app's settings, from the environment and `.env`).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        router: Router | str | None = None,
        *,
        settings: Settings | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        settings = settings or connections.current_settings()
        if not isinstance(router, Router):
            router = load_routes(router or settings.routes_package)
        if router.default_max_payload is None:
            router.default_max_payload = settings.mqtt_max_payload
        self.router = router
        #: Every message published so far, dead letters included, in order.
        self.sent: list[Published] = []
        self.stats = IntakeStats()
        self._held: BaseException | None = None
        self._delivery = Delivery(
            router,
            self._publish,
            settings.mqtt_handler_retries,
            settings.mqtt_dead_letter_topic.rstrip("/") + "/",
            settings.mqtt_dead_letter_max_bytes,
            retry_pause=lambda attempt, exc: True,
            outage_pause=self._hold,
            outbox=outbox if outbox is not None else DispatchOutbox(),
            stats=self.stats,
        )

    def publish(
        self,
        topic: str,
        payload: Payload = b"",
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | Mapping[str, Any] | Properties | None = None,
    ) -> Result:
        """Deliver one message to the routes and return what became of it.

        `payload`: bytes, text (sent as UTF-8) or a dict/list (sent as JSON).
        `properties`: MQTT 5 properties of the request, as `MessageProperties`
        (`MessageProperties(response_topic="app/replies/7", correlation_data=b"7")`),
        paho `Properties` or a dict of paho names (`{"ResponseTopic": ...}`).
        `ValueError` for a topic no broker would accept (empty, wildcards, NUL).
        """
        validate_publish_topic(topic)
        match = self.router.match(topic)
        delivered_qos = min(qos, match.route.qos if match else qos, MAX_SUBSCRIBE_QOS)
        inbound = Inbound(
            topic, _as_bytes(payload), delivered_qos, retain, _publish_properties(properties)
        )
        first_sent = len(self.sent)
        self._held = None
        outcome = self._delivery.route(inbound)
        stored = outcome is None or outcome.records is None or self._delivery.store([outcome])
        if not stored:
            outcome = None  # held by an outage while storing its jobs
        if outcome is None:
            return Result(
                topic,
                delivered_qos,
                match.route.pattern if match else None,
                match.params if match else {},
                handled=False,
                acknowledged=False,
                attempts=0,
                error=self._held,
                dead_letter=None,
                published=self.sent[first_sent:],
            )
        return self._result(outcome.message, outcome, first_sent)

    def _result(self, message: Message, outcome: Outcome, first_sent: int) -> Result:
        sent = self.sent[first_sent:]
        dead_letter = None
        if outcome.dead_letter is not None:
            target, body = outcome.dead_letter
            dead_letter = next(p for p in sent if p.topic == target and p.payload == body)
            sent = [p for p in sent if p is not dead_letter]
        route = message.route
        return Result(
            message.topic,
            message.qos,
            None if route is None else route.pattern,
            dict(message.params),
            handled=outcome.routed,
            acknowledged=True,
            attempts=outcome.attempts,
            error=outcome.error,
            dead_letter=dead_letter,
            published=sent,
        )

    def _publish(
        self,
        topic: str,
        payload: Payload,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        """What `message.publish()`/`reply()` and dead letters call: checked, then captured."""
        validate_publish_topic(topic)
        self.sent.append(Published(topic, _as_bytes(payload), qos, retain, properties))

    def _hold(self, held: int, exc: BaseException) -> bool:
        """An outage: leave the message unacknowledged at once instead of waiting."""
        self._held = exc
        return False


def _as_bytes(payload: Payload) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _publish_properties(
    properties: MessageProperties | Mapping[str, Any] | Properties | None,
) -> Properties | None:
    """MQTT 5 PUBLISH properties as paho receives them (paho checks each dict name)."""
    if properties is None or isinstance(properties, Properties):
        return properties
    if isinstance(properties, MessageProperties):
        return publish_properties(properties, mqtt5=True, topic="-")
    converted = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in properties.items():
        setattr(converted, name, value)
    return converted
