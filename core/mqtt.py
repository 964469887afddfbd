"""The MQTT runtime: one paho client that hands every incoming message to a dispatcher.

It knows nothing about routes beyond the subscription list it is given. What it
guarantees:

- Every subscription is (re)sent in `on_connect`, so each reconnect restores them
  all; reconnects back off from `RECONNECT_MIN_DELAY` to `RECONNECT_MAX_DELAY`.
- Handlers run inline on the network thread (`loop_forever` in our own thread),
  one message at a time, in arrival order. A QoS 1/2 message is acknowledged only
  after its handler returned (paho `manual_ack`), so a crash mid-handler means the
  broker redelivers it (with a persistent session, also across a restart). Acks
  therefore leave in arrival order, and the broker's in-flight window (MQTT 5
  Receive Maximum = MQTT_MAX_INFLIGHT; mosquitto's `max_inflight_messages` for
  3.1.1) bounds how many unacknowledged messages we hold.
- A handler exception never stops the loop: it is logged with topic and route,
  the message is retried up to MQTT_HANDLER_RETRIES attempts, then acknowledged and
  dead-lettered. A `PayloadError` (undecodable payload) is permanent: dead-lettered
  at once. A topic no route matches is acknowledged and logged at DEBUG.
- Dead letters go to `{MQTT_DEAD_LETTER_TOPIC}/{original topic}` at QoS 1 with a
  JSON body: topic, route, error, attempts, qos, retain, payload (UTF-8 text when it
  decodes, else base64, as `payload_encoding` says) and failed_at (UTC ISO time).
- Handlers publish on the same connection; any other thread publishes through a
  second connection `{client id}-out`, because paho under `loop_forever` would
  write from the calling thread and race the network thread.
- Persistent sessions (MQTT_PERSISTENT_SESSION) need a fixed client id: 3.1.1
  connects with clean_session=False; 5 with clean_start=False and
  SessionExpiryInterval=MQTT_SESSION_EXPIRY on every CONNECT.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from config.settings import ConfigError, Settings
from core.message import Message, PayloadError
from core.topics import validate_publish_topic
from support.backoff import full_jitter

log = logging.getLogger(__name__)

#: Seconds before the first reconnect attempt; doubles per failed attempt.
RECONNECT_MIN_DELAY = 1
#: Seconds between reconnect attempts at most.
RECONNECT_MAX_DELAY = 30
#: Seconds: ceiling of the jittered wait before a failing handler's second attempt;
#: doubles per attempt up to HANDLER_RETRY_CAP.
HANDLER_RETRY_DELAY = 0.05
#: Seconds: the longest wait between two attempts of a failing handler.
HANDLER_RETRY_CAP = 2.0
#: Highest QoS we subscribe with. paho answers a QoS 2 PUBLISH with PUBREC before
#: the handler runs and, with manual acks, ignores a redelivered PUBREL it does not
#: know: a crash mid-handler would lose the message and leak a broker in-flight
#: slot. Acking after the handler is only sound up to QoS 1 (at least once).
MAX_SUBSCRIBE_QOS = 1
#: Seconds `stop()` waits for the network thread to finish.
STOP_TIMEOUT = 10.0
#: QoS of dead-letter publications: at least once, so a poison message is not lost twice.
DEAD_LETTER_QOS = 1
#: Seconds the side publisher (for non-network threads) waits for its first connection.
SIDE_CONNECT_TIMEOUT = 5.0
#: Prefix of generated client ids (a random suffix makes each run distinct).
CLIENT_ID_PREFIX = "mqtt-jobs-"


class Dispatcher(Protocol):
    """What the runtime needs from the router: route one message."""

    def dispatch(self, message: Message) -> bool:
        """Run the matching route; False if none matched; raise what the handler raised."""


class SubscriptionSpec(Protocol):
    """What the runtime needs from a subscription: the string to subscribe and its QoS."""

    @property
    def topic(self) -> str:
        """Filter to subscribe (`$share/group/filter` for shared routes)."""

    @property
    def qos(self) -> int:
        """Maximum QoS requested for it."""


def generated_client_id() -> str:
    """A fresh random client id, for runs without MQTT_CLIENT_ID (non-persistent sessions)."""
    return CLIENT_ID_PREFIX + uuid.uuid4().hex[:12]


def check_session_settings(settings: Settings) -> None:
    """`ConfigError` if a persistent session is asked for without a fixed client id."""
    if settings.mqtt_persistent_session and not settings.mqtt_client_id:
        raise ConfigError(
            "MQTT_PERSISTENT_SESSION=true needs a fixed MQTT_CLIENT_ID: the broker keeps the "
            "session under that id, and a generated id would start an empty session each run"
        )


def _route_pattern(message: Message) -> str:
    route = message.route
    if route is None:
        return "-"
    return str(getattr(route, "pattern", route))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def new_paho_client(settings: Settings, client_id: str, persistent: bool) -> paho.Client:
    """A paho 2.x client with the protocol, credentials, TLS and limits of `settings`.

    TLS (`Settings.mqtt_tls_enabled`) checks the broker's certificate against
    MQTT_TLS_CA, or the system's CAs when only MQTT_TLS=true is set, and its
    name against MQTT_HOST; MQTT_TLS_INSECURE=true turns both checks off.
    Messages are acknowledged manually (`client.ack`), after their handler.
    """
    v5 = settings.mqtt_protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else not persistent,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    if settings.mqtt_tls_enabled:
        client.tls_set(
            ca_certs=settings.mqtt_tls_ca,
            certfile=settings.mqtt_tls_cert,
            keyfile=settings.mqtt_tls_key,
            cert_reqs=ssl.CERT_NONE if settings.mqtt_tls_insecure else ssl.CERT_REQUIRED,
        )
        if settings.mqtt_tls_insecure:
            client.tls_insecure_set(True)
            log.warning(
                "MQTT_TLS_INSECURE=true: the broker's certificate is not checked, "
                "so anyone on the path can read and forge messages"
            )
    client.max_inflight_messages_set(settings.mqtt_max_inflight)
    client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)
    return client


def connect_async(client: paho.Client, settings: Settings, persistent: bool) -> None:
    """Set the CONNECT parameters; the network loop connects (and reconnects) with them.

    MQTT 5: Receive Maximum = MQTT_MAX_INFLIGHT; a persistent session sends
    clean_start=False and SessionExpiryInterval=MQTT_SESSION_EXPIRY on EVERY
    connect (paho's default, clean start on the first connect only, would wipe
    the session at each process start).
    """
    assert settings.mqtt_host is not None
    if settings.mqtt_protocol != "5":
        client.connect_async(settings.mqtt_host, settings.mqtt_port, settings.mqtt_keepalive)
        return
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = settings.mqtt_max_inflight
    if persistent:
        properties.SessionExpiryInterval = settings.mqtt_session_expiry
    client.connect_async(
        settings.mqtt_host,
        settings.mqtt_port,
        settings.mqtt_keepalive,
        clean_start=not persistent,
        properties=properties,
    )


class MqttRuntime:
    """A connected paho client feeding `dispatcher` with the messages of `subscriptions`.

    `start()` connects in the background (retrying until the broker answers),
    `stop()` finishes the message being handled, disconnects and joins the thread.
    `publish()` is what `Message.publish` calls from handlers.
    """

    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        subscriptions: Sequence[SubscriptionSpec],
        client_id: str | None = None,
    ) -> None:
        check_session_settings(settings)
        if settings.mqtt_host is None:
            raise ConfigError("MQTT_HOST is not set: start the embedded broker first (core.app)")
        self.settings = settings
        self.host: str = settings.mqtt_host
        self.port = settings.mqtt_port
        self.client_id = client_id or settings.mqtt_client_id or generated_client_id()
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
        self._dispatcher = dispatcher
        self._v5 = settings.mqtt_protocol == "5"
        self._attempts = settings.mqtt_handler_retries
        self._dead_letter_prefix = settings.mqtt_dead_letter_topic.rstrip("/") + "/"
        self._handling = threading.Lock()  #: held while a message is handled and acked
        self._stopping = False
        self._connected = False
        self._pending_subscribe: dict[int, list[str]] = {}
        self._thread: threading.Thread | None = None
        self._side: paho.Client | None = None  #: publisher for non-network threads
        self._side_lock = threading.Lock()

        #: Set while connected with every subscription acknowledged by the broker.
        self.ready = threading.Event()
        self.connections = 0  #: successful CONNACKs so far (1 + reconnects)
        self.handled = 0  #: messages whose route returned
        self.unmatched = 0  #: messages no route matched (acked)
        self.dead_lettered = 0  #: messages published to the dead-letter topic
        self.handler_failures = 0  #: failed handler attempts, retries included

        self.client = self._build_client()

    # -- setup --------------------------------------------------------------------

    def _build_client(self) -> paho.Client:
        settings = self.settings
        client = new_paho_client(settings, self.client_id, settings.mqtt_persistent_session)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        connect_async(client, settings, settings.mqtt_persistent_session)
        return client

    def _side_publisher(self) -> paho.Client:
        """The connection publishing for threads other than the network thread.

        paho, run by `loop_forever` in our thread, writes a publish straight to the
        socket from the calling thread, which races the network thread (fatal on a
        TLS socket). Other threads therefore publish through this second, clean-session
        connection (`{client id}-out`), made on first use with paho's own thread.
        """
        with self._side_lock:
            if self._side is None:
                connected = threading.Event()
                side = new_paho_client(self.settings, f"{self.client_id}-out", persistent=False)
                side.on_connect = lambda *_args: connected.set()
                connect_async(side, self.settings, persistent=False)
                side.loop_start()
                if not connected.wait(SIDE_CONNECT_TIMEOUT):
                    log.warning("side publisher of %s is not connected yet", self.describe)
                self._side = side
            return self._side

    @property
    def describe(self) -> str:
        """`client-id@host:port (MQTT x)` for log lines; never includes credentials."""
        version = "5" if self._v5 else "3.1.1"
        return f"{self.client_id}@{self.host}:{self.port} (MQTT {version})"

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start the network thread; it connects, retrying with backoff until it succeeds."""
        if self._thread is not None:
            raise RuntimeError("MqttRuntime.start() called twice")
        self._thread = threading.Thread(target=self._network_loop, name="mqtt-network", daemon=True)
        self._thread.start()

    def _network_loop(self) -> None:
        try:
            self.client.loop_forever(retry_first_connection=True)
        except Exception:
            log.exception("MQTT network loop of %s crashed", self.describe)
            raise

    @property
    def alive(self) -> bool:
        """True while the network thread runs (connected or reconnecting)."""
        return self._thread is not None and self._thread.is_alive()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed; True if that happened within `timeout` s."""
        return self.ready.wait(timeout)

    def stop(self) -> None:
        """Finish the message in hand, disconnect and end the network thread.

        Messages that arrive after this are neither handled nor acknowledged: a
        persistent session gets them redelivered at the next start.
        """
        acquired = self._handling.acquire(timeout=STOP_TIMEOUT)
        self._stopping = True
        if acquired:
            self._handling.release()
        else:
            log.warning("a handler of %s is still running; disconnecting anyway", self.describe)
        self.client.disconnect()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():
                log.warning("MQTT network thread of %s did not stop in time", self.describe)
        self.ready.clear()
        if self._side is not None:
            self._side.disconnect()
            self._side.loop_stop()

    # -- paho callbacks (network thread) -----------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker refused %s: %s", self.describe, reason_code)
            return
        self.connections += 1
        self._connected = True
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
        """SUBSCRIBE entries; on MQTT 5 retained messages come only for a new subscription.

        A reconnect resubscribes every route; without RetainHandling=1 the broker
        would resend every retained message and handlers would run for them again.
        This only helps a persistent session: a clean session starts without
        subscriptions, so after each reconnect the retained messages come again
        (MQTT semantics; handlers of retained topics should be idempotent).
        """
        if not self._v5:
            return list(self.subscriptions)
        return [
            (
                topic,
                SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB),
            )
            for topic, qos in self.subscriptions
        ]

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        log.warning("cannot reach MQTT broker for %s; retrying with backoff", self.describe)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        self.ready.clear()
        if not self._connected:
            return  # paho reports the end of an already closed connection again
        self._connected = False
        if self._stopping:
            log.info("disconnected %s: %s", self.describe, reason_code)
        else:
            log.warning(
                "lost MQTT connection of %s: %s; reconnecting with backoff",
                self.describe,
                reason_code,
            )

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

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._handling:
            if self._stopping:
                return  # not acked: redelivered to the next session
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                log.error("dropping a message whose topic is not UTF-8: %r", msg._topic)
            else:
                self._handle(topic, cast(bytes, msg.payload), msg.qos, msg.retain, msg.properties)
            if msg.qos:
                client.ack(msg.mid, msg.qos)

    # -- message handling ---------------------------------------------------------

    def _handle(self, topic: str, payload: bytes, qos: int, retain: bool, properties: Any) -> None:
        """Route one message, retrying failures, dead-lettering what keeps failing; never raises."""
        attempt = 1
        while True:
            message = Message(topic, payload, qos, retain, properties, publish=self.publish)
            try:
                if self._dispatcher.dispatch(message):
                    self.handled += 1
                else:
                    self.unmatched += 1  # the router logs it at DEBUG; we still ack it
                return
            except PayloadError as exc:
                log.error(
                    "rejected payload on topic %r (route %s): %s",
                    topic,
                    _route_pattern(message),
                    exc,
                )
                self._dead_letter(message, exc, attempt)
                return
            except BaseException as exc:
                # SystemExit from a handler must not end the network thread.
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.handler_failures += 1
                if attempt < self._attempts:
                    log.warning(
                        "handler for topic %r (route %s) failed on attempt %d/%d: %s; retrying",
                        topic,
                        _route_pattern(message),
                        attempt,
                        self._attempts,
                        _error_text(exc),
                    )
                    time.sleep(full_jitter(attempt, HANDLER_RETRY_DELAY, HANDLER_RETRY_CAP))
                    attempt += 1
                    continue
                log.error(
                    "handler for topic %r (route %s) failed %d time(s); dead-lettering it",
                    topic,
                    _route_pattern(message),
                    attempt,
                    exc_info=exc,
                )
                self._dead_letter(message, exc, attempt)
                return

    def _dead_letter(self, message: Message, exc: BaseException, attempts: int) -> None:
        if message.topic.startswith(self._dead_letter_prefix):
            # A route on the dead-letter topics failed too: re-publishing would loop.
            log.error("dead letter on %r failed again; dropping it", message.topic)
            return
        try:
            text: str | None = message.payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        body = {
            "topic": message.topic,
            "route": _route_pattern(message),
            "error": _error_text(exc),
            "attempts": attempts,
            "qos": message.qos,
            "retain": message.retain,
            "payload": text if text is not None else base64.b64encode(message.payload).decode(),
            "payload_encoding": "utf-8" if text is not None else "base64",
            "failed_at": datetime.now(UTC).isoformat(),
        }
        target = self._dead_letter_prefix + message.topic
        info = self.client.publish(
            target, json.dumps(body, separators=(",", ":")), qos=DEAD_LETTER_QOS
        )
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.error("could not publish dead letter to %r: %s; body %s", target, info.rc, body)
            return
        self.dead_lettered += 1
        log.warning("dead-lettered message from %r to %r", message.topic, target)

    # -- publishing ---------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        """Publish through this client; `ValueError` for a wildcard/NUL/empty topic.

        Handlers run on the network thread and publish on the main connection;
        other threads publish through a second connection (see `_side_publisher`).

        QoS 1/2 messages published while disconnected are queued and sent after
        the reconnect; a QoS 0 message is dropped then, with a warning.
        """
        validate_publish_topic(topic)
        network_thread = self._thread is None or threading.current_thread() is self._thread
        client = self.client if network_thread else self._side_publisher()
        info = client.publish(topic, payload, qos, retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            if qos == 0:
                log.warning("not connected: QoS 0 message to %r dropped", topic)
            return
        raise RuntimeError(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
