"""The MQTT runtime: one paho client whose network thread only receives, sends and acks.

It knows nothing about routes beyond the subscription list it is given. What it
guarantees:

- paho's own network thread (`loop_start`) reads, writes, pings and acks; it
  never runs user code and never waits for a backend, so keepalive holds
  whatever handlers do. Each received message goes to the `Intake`
  (core/intake.py), whose handler threads route it: one topic in arrival order,
  different topics in parallel (MQTT_HANDLER_CONCURRENCY).
- A QoS 1 message is acknowledged only after its handler returned, and PUBACKs
  leave in arrival order (core/acks.py), so a crash mid-handler means the broker
  redelivers it (with a persistent session, also across a restart). The broker's
  in-flight window (MQTT 5 Receive Maximum = MQTT_MAX_INFLIGHT; mosquitto's
  `max_inflight_messages` for 3.1.1) bounds how many unacknowledged messages we hold.
- Every subscription is (re)sent in `on_connect`, so each reconnect restores them
  all; reconnects start after `RECONNECT_MIN_DELAY` and back off to `RECONNECT_MAX_DELAY`.
- Handler failures, payload errors and backend outages follow the intake's rules:
  retried then dead-lettered, dead-lettered at once, and held unacknowledged
  until the backend is back. An exception in any paho callback is caught,
  logged with the topic and counted (`callback_errors`): the network loop never ends
  because of what a message holds.
- Publishing is safe from any thread: paho's loop thread writes the socket, other
  threads only queue packets. MQTT 5 properties go through (`MessageProperties`);
  over 3.1.1 they are refused.
- On MQTT 5, non-shared routes subscribe with NoLocal: the app's own publications
  (replies, dead letters) never come back to it through them.
- Sessions are persistent by default (MQTT_PERSISTENT_SESSION=true): 3.1.1
  connects with clean_session=False; 5 with clean_start=False and
  SessionExpiryInterval=MQTT_SESSION_EXPIRY on every CONNECT. The client id is
  MQTT_CLIENT_ID, else a stable id made of APP_NAME and the host name
  (`default_client_id`), so a restarted app finds its session again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from backends.mqtt_client import (
    connect_async,
    generated_client_id,
    is_mqtt5,
    new_paho_client,
)
from backends.mqtt_message import MessageProperties, Payload, prepare_publish
from config.settings import ConfigError, Settings
from core.acks import AckSequencer
from core.intake import BatchObserver, Dispatcher, Intake, IntakeStats, Outbox
from core.topics import SHARE_PREFIX

log = logging.getLogger(__name__)

#: Highest QoS we subscribe with. paho answers a QoS 2 PUBLISH with PUBREC before
#: the handler runs and, with manual acks, ignores a redelivered PUBREL it does not
#: know: a crash mid-handler would lose the message and leak a broker in-flight
#: slot. Acking after the handler is only sound up to QoS 1 (at least once).
MAX_SUBSCRIBE_QOS = 1
#: Seconds `stop()` waits for handlers to finish the messages already received.
STOP_TIMEOUT = 10.0
#: Characters kept in a derived client id; others become `-`.
_CLIENT_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: MQTT 5 DISCONNECT reason code sent when another client took over our session.
SESSION_TAKEN_OVER = 142

_Callback = TypeVar("_Callback", bound=Callable[..., None])


class SubscriptionSpec(Protocol):
    """What the runtime needs from a subscription: the string to subscribe and its QoS."""

    @property
    def topic(self) -> str:
        """Filter to subscribe (`$share/group/filter` for shared routes)."""

    @property
    def qos(self) -> int:
        """Maximum QoS requested for it."""


def default_client_id(settings: Settings) -> str:
    """The client id of this process: MQTT_CLIENT_ID, else one that survives restarts.

    A persistent session needs the same id at every start, so without
    MQTT_CLIENT_ID it is `{APP_NAME}-{host name}`; a clean session gets a random
    id. Two processes must never share an id (the broker would disconnect one
    of them for the other, over and over): `--run --workers N` appends the
    worker number, and two apps on one host need their own APP_NAME or
    MQTT_CLIENT_ID.
    """
    if settings.mqtt_client_id:
        return settings.mqtt_client_id
    if not settings.mqtt_persistent_session:
        return generated_client_id()
    derived = f"{settings.app_name}-{socket.gethostname()}"
    return _CLIENT_ID_UNSAFE.sub("-", derived).strip("-") or generated_client_id()


def _guarded(callback: _Callback) -> _Callback:
    """Wrap a paho callback method: an exception is logged and counted, never raised.

    paho re-raises a callback's exception out of its network loop, which would
    end the loop (and the process) over one bad message.
    """

    @functools.wraps(callback)
    def run(self: MqttRuntime, *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception:
            self.callback_errors += 1
            log.exception("MQTT callback %s of %s failed", callback.__name__, self.describe)

    return cast(_Callback, run)


class MqttRuntime:
    """A connected paho client feeding the router with the messages of `subscriptions`.

    `start()` connects in the background (retrying until the broker answers);
    `stop()` stops taking messages, lets handlers finish those received (their
    PUBACKs go out), disconnects and joins the network thread. `publish()` is
    what `Message.publish` calls from handlers, from any thread. With an
    `outbox`, what handlers dispatch is stored per batch before the acks (see
    core/intake.py); an `observer` learns each batch's outcomes (core/metrics.py).
    """

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        subscriptions: Sequence[SubscriptionSpec],
        client_id: str | None = None,
        outbox: Outbox | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        if settings.mqtt_host is None:
            raise ConfigError("MQTT_HOST is not set: start the embedded broker first (core.app)")
        self.settings = settings
        self.host: str = settings.mqtt_host
        self.port = settings.mqtt_port
        self.client_id = client_id or default_client_id(settings)
        self.subscriptions = [(sub.topic, min(sub.qos, MAX_SUBSCRIBE_QOS)) for sub in subscriptions]
        for sub in subscriptions:
            if sub.qos > MAX_SUBSCRIBE_QOS:
                log.warning(
                    "route %s asks for QoS %d; subscribing with QoS %d (at least once, acked "
                    "after the handler)",
                    sub.topic,
                    sub.qos,
                    MAX_SUBSCRIBE_QOS,
                )
        self._v5 = is_mqtt5(settings)
        self._stopping = False
        self._started = False
        self._connected = False
        self._pending_subscribe: dict[int, list[str]] = {}

        #: Set while connected with every subscription acknowledged by the broker.
        self.ready = threading.Event()
        self.connections = 0  #: successful CONNACKs so far (1 + reconnects)
        self.callback_errors = 0  #: exceptions caught in paho callbacks

        self.client = self._build_client()
        self._acks = AckSequencer(self.client.ack)
        self.intake = Intake(
            dispatcher,
            self.publish,
            self._acks,
            concurrency=settings.mqtt_handler_concurrency,
            window=settings.mqtt_max_inflight,
            attempts=settings.mqtt_handler_retries,
            dead_letter_prefix=settings.mqtt_dead_letter_topic.rstrip("/") + "/",
            dead_letter_max_bytes=settings.mqtt_dead_letter_max_bytes,
            outbox=outbox,
            observer=observer,
            on_stuck=self._drop_connection,
        )

    # -- counters (see IntakeStats) ----------------------------------------------

    @property
    def stats(self) -> IntakeStats:
        """The intake's counters."""
        return self.intake.stats

    @property
    def handled(self) -> int:
        """Messages whose route returned."""
        return self.intake.stats.handled

    @property
    def unmatched(self) -> int:
        """Messages no route matched (acknowledged)."""
        return self.intake.stats.unmatched

    @property
    def dead_lettered(self) -> int:
        """Messages published to the dead-letter topic."""
        return self.intake.stats.dead_lettered

    @property
    def acked(self) -> int:
        """PUBACKs handed to the network thread so far."""
        return self._acks.acked

    @property
    def handler_failures(self) -> int:
        """Failed handler attempts, retries included."""
        return self.intake.stats.handler_failures

    # -- setup --------------------------------------------------------------------

    def _build_client(self) -> paho.Client:
        settings = self.settings
        client = new_paho_client(
            settings, self.client_id, settings.mqtt_persistent_session, manual_ack=True
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        # No cap on our own unacknowledged publishes: a capped one waits in paho while
        # later PUBACKs go out, so a dead letter could be lost behind its message's ack.
        client.max_inflight_messages_set(0)
        connect_async(client, settings, settings.mqtt_persistent_session)
        return client

    @property
    def describe(self) -> str:
        """`client-id@host:port (MQTT x)` for log lines; never includes credentials."""
        version = "5" if self._v5 else "3.1.1"
        return f"{self.client_id}@{self.host}:{self.port} (MQTT {version})"

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start paho's network thread; it connects, retrying with backoff until it succeeds."""
        if self._started:
            raise RuntimeError("MqttRuntime.start() called twice")
        self._started = True
        if self.client.loop_start() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"cannot start the MQTT network thread of {self.describe}")

    @property
    def connected(self) -> bool:
        """True while connected to the broker (subscriptions may still be pending)."""
        return self._connected

    @property
    def alive(self) -> bool:
        """True while the network thread runs (connected or reconnecting)."""
        thread: threading.Thread | None = getattr(self.client, "_thread", None)
        return thread is not None and thread.is_alive()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed; True if that happened within `timeout` s."""
        return self.ready.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop taking messages, finish those received, disconnect, end the network thread.

        Messages that arrive after this are neither handled nor acknowledged, nor
        are those whose handler is still running after `timeout` seconds: a
        persistent session gets them redelivered at the next start.
        """
        self._stopping = True
        if not self.intake.stop(timeout):
            log.warning("a handler of %s is still running; disconnecting anyway", self.describe)
        self.client.disconnect()
        self.client.loop_stop()
        self.ready.clear()

    # -- paho callbacks (network thread) -----------------------------------------

    @_guarded
    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker refused %s: %s", self.describe, reason_code)
            return
        self.connections += 1
        self._connected = True
        broker_limit = getattr(properties, "MaximumPacketSize", None)
        if isinstance(broker_limit, int) and broker_limit > 0:
            self.intake.dead_letter_max_bytes = min(
                self.settings.mqtt_dead_letter_max_bytes, broker_limit
            )
        log.info(
            "connected to MQTT broker as %s (session present: %s)",
            self.describe,
            bool(getattr(flags, "session_present", False)),
        )
        if not self.subscriptions:
            self.ready.set()
            return
        self._pending_subscribe.clear()
        result, mid = client.subscribe(self._subscribe_request())
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            log.error("could not send SUBSCRIBE for %s: %s", self.describe, result)
            return
        self._pending_subscribe[mid] = [topic for topic, _ in self.subscriptions]

    def _subscribe_request(self) -> list[tuple[str, Any]]:
        """SUBSCRIBE entries; on MQTT 5 with NoLocal and retained messages for new ones only.

        NoLocal: the broker never sends this client its own publications on a
        non-shared route, so a handler that publishes or replies under its own
        filter is not handed its message back. MQTT 5 forbids NoLocal on a shared
        subscription (a protocol error, [MQTT-3.8.3-4]; mosquitto 2.0 accepts the
        bit and ignores it), so shared routes do receive the app's own messages.

        RetainHandling=1: a reconnect resubscribes every route; without it the
        broker would resend every retained message and handlers would run for
        them again. This only helps a persistent session: a clean session starts
        without subscriptions, so after each reconnect the retained messages come
        again (MQTT semantics; handlers of retained topics should be idempotent).
        """
        if not self._v5:
            return list(self.subscriptions)
        return [
            (
                topic,
                SubscribeOptions(
                    qos=qos,
                    noLocal=not topic.startswith(SHARE_PREFIX),
                    retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB,
                ),
            )
            for topic, qos in self.subscriptions
        ]

    @_guarded
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # PUBACKs leave from handler threads one by one; with Nagle's algorithm each
        # small write after the first waits for the broker's delayed TCP ACK (~40 ms),
        # which caps the intake at about (in-flight window / 40 ms).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _drop_connection(self) -> None:
        """Cut the connection (any thread): paho reconnects, and the broker redelivers
        every unacknowledged message. The way out when a message cannot be finished."""
        log.error("dropping the MQTT connection of %s so unfinished messages are redelivered",
                  self.describe)  # fmt: skip
        sock: Any = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.shutdown(socket.SHUT_RDWR)

    @_guarded
    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho closes the socket on every path that ends a connection, some of which
        # never call on_disconnect (a failing select): packet ids die with the socket.
        self._acks.new_connection()

    @_guarded
    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        log.warning("cannot reach MQTT broker for %s; retrying with backoff", self.describe)

    @_guarded
    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        self.ready.clear()
        # Before paho reconnects: acks of this connection's packet ids must not
        # reach the next connection, where the same ids name other messages.
        self._acks.new_connection()
        if not self._connected:
            return  # paho reports the end of an already closed connection again
        self._connected = False
        if self._stopping:
            log.info("disconnected %s: %s", self.describe, reason_code)
            return
        if getattr(reason_code, "value", None) == SESSION_TAKEN_OVER:
            log.error(
                "the broker disconnected %s: another client connected with the same client id "
                "(set a distinct MQTT_CLIENT_ID or APP_NAME per process); reconnecting",
                self.describe,
            )
            return
        log.warning(
            "lost MQTT connection of %s: %s; reconnecting with backoff", self.describe, reason_code
        )

    @_guarded
    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        topics = self._pending_subscribe.pop(mid, [])
        refused = [
            (topic, code)
            for topic, code in zip(topics, reason_codes, strict=False)
            if code.is_failure
        ]
        for topic, code in refused:
            log.error("MQTT broker refused the subscription to %r: %s", topic, code)
        log.info("subscribed to %d filter(s) as %s", len(topics) - len(refused), self.client_id)
        if not self._pending_subscribe:
            self.ready.set()

    @_guarded
    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            log.error("dropping a message whose topic is not UTF-8: %r", msg._topic[:200])
            if msg.qos:
                self._acks.done(self._acks.take(msg.mid, msg.qos))
            return
        self.intake.accept(
            topic, cast(bytes, msg.payload), msg.qos, msg.retain, msg.properties, msg.mid
        )

    # -- publishing ---------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: Payload,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> paho.MQTTMessageInfo:
        """Publish through this client from any thread; `ValueError` for a bad topic or payload.

        The calling thread only queues the packet; paho's network thread sends it.
        Returns paho's receipt (`wait_for_publish`, `is_published`).
        QoS 1/2 messages published while disconnected are queued and sent after
        the reconnect; a QoS 0 message is dropped then, with a warning. MQTT 5
        `properties` over MQTT 3.1.1 raise `PropertiesNotSupported`.
        """
        body, packed = prepare_publish(topic, payload, properties, self._v5)
        info = self.client.publish(topic, body, qos, retain, packed)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return info
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            if qos == 0:
                log.warning("not connected: QoS 0 message to %r dropped", topic)
            return info
        raise RuntimeError(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
