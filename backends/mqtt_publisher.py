"""The MQTT connection jobs publish through: one per process, opened on first use, at least once.

`get_publisher(settings)` returns the process-wide `MqttPublisher`; it connects
(with the app's settings: broker, login, TLS, protocol; a clean session under
its own random client id, never the app's) the first time a job publishes, and
every later job of the process reuses the connection. paho's network thread
keeps it alive and reconnects after a broker restart.

A QoS 1 (or 2) `publish` returns only once the broker acknowledged the message;
otherwise it raises, so the job's attempt fails and the job is retried by its
policy: at least once. A message whose acknowledgement was lost may still
reach the broker later (paho re-sends it after a reconnect), so a retried job
can publish twice: receivers of job commands should be idempotent, as with
any at-least-once delivery.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from backends.errors import BackendError, BackendUnavailableError
from backends.mqtt_client import (
    CLIENT_ID_PREFIX,
    RECONNECT_MIN_DELAY,
    broker_address,
    connect_async,
    generated_client_id,
    is_mqtt5,
    new_paho_client,
)
from backends.mqtt_message import MessageProperties, Payload, prepare_publish
from config.settings import Settings

log = logging.getLogger(__name__)

#: Seconds a QoS 1/2 publish waits for the broker's acknowledgement before it fails.
PUBLISH_TIMEOUT = 10.0
#: Seconds a publish waits for the connection (first connect or reconnect) before it fails.
CONNECT_TIMEOUT = 5.0
#: Seconds between reconnect attempts at most: short, since a waiting job gives up
#: after CONNECT_TIMEOUT and its retry should find the broker soon after it is back.
RECONNECT_MAX_DELAY = 2
#: Prefix of the publisher's client ids (a random suffix per process).
PUBLISHER_CLIENT_ID_PREFIX = f"{CLIENT_ID_PREFIX}jobs-"


class MqttUnavailableError(BackendUnavailableError):
    """The broker cannot be reached, refused the login, or did not acknowledge in time."""


class MqttPublishRefused(BackendError):
    """The MQTT 5 broker answered the publish with a failure reason code (e.g. not authorized)."""


class MqttPublisher:
    """One MQTT connection for publishing, shared by the jobs of a process (thread-safe).

    Nothing connects until the first `publish`. See the module docstring for
    what a publish guarantees.
    """

    def __init__(
        self,
        settings: Settings,
        publish_timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._settings = settings
        self.host, self.port = broker_address(settings)
        #: seconds to wait for a PUBACK (default PUBLISH_TIMEOUT)
        self.publish_timeout = PUBLISH_TIMEOUT if publish_timeout is None else publish_timeout
        #: seconds to wait for the connection (default CONNECT_TIMEOUT)
        self.connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        self._v5 = is_mqtt5(settings)
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self._owner_pid = os.getpid()
        self._connected = threading.Event()
        self._refusal: str | None = None
        self._refused: dict[int, str] = {}  #: packet id -> failure reason code of its PUBACK
        self.connections = 0  #: CONNACKs received so far (1 + reconnects)

    @property
    def address(self) -> str:
        """`host:port` of the broker, for messages."""
        return f"{self.host}:{self.port}"

    def publish(
        self,
        topic: str,
        payload: Payload,
        qos: int = 1,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish and, for QoS 1/2, wait until the broker acknowledged the message.

        Raises `ValueError` for a bad topic, `PropertiesNotSupported` for MQTT 5
        properties over 3.1.1, `MqttUnavailableError` when the broker is not
        connected within `connect_timeout` or does not acknowledge within
        `publish_timeout`, `MqttPublishRefused` for an MQTT 5 failure reason code.
        """
        body, packed = prepare_publish(topic, payload, properties, self._v5)
        client = self._connected_client()
        info = client.publish(topic, body, qos, retain, packed)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            raise MqttUnavailableError(
                f"MQTT broker at {self.address} disconnected before the publish to {topic!r}"
            )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttUnavailableError(
                f"cannot publish to {topic!r} through {self.address}: {paho.error_string(info.rc)}"
            )
        if qos == 0:
            return
        info.wait_for_publish(self.publish_timeout)
        if not info.is_published():
            raise MqttUnavailableError(
                f"MQTT broker at {self.address} did not acknowledge the publish to {topic!r} "
                f"within {self.publish_timeout:g} s"
            )
        reason = self._refused.pop(info.mid, None)
        if reason is not None:
            raise MqttPublishRefused(
                f"MQTT broker at {self.address} refused the publish to {topic!r}: {reason}"
            )

    def close(self) -> None:
        """Disconnect and end the network thread (nothing is sent from a forked child)."""
        with self._lock:
            client, self._client = self._client, None
        self._connected.clear()
        if client is None or os.getpid() != self._owner_pid:
            return  # a forked child must not close its parent's connection
        client.disconnect()
        client.loop_stop()

    # -- connection -------------------------------------------------------------

    def _connected_client(self) -> paho.Client:
        """The client, connected: opened on first use, else waiting for a reconnect."""
        with self._lock:
            client = self._client
            if client is None:
                client = self._client = self._open()
        if not self._connected.wait(self.connect_timeout):
            refusal = f": {self._refusal}" if self._refusal else ""
            raise MqttUnavailableError(
                f"MQTT broker at {self.address} is unreachable (not connected within "
                f"{self.connect_timeout:g} s){refusal}"
            )
        return client

    def _open(self) -> paho.Client:
        settings = self._settings
        client = new_paho_client(
            settings, generated_client_id(PUBLISHER_CLIENT_ID_PREFIX), persistent=False
        )
        client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        connect_async(client, settings, persistent=False)
        if client.loop_start() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttUnavailableError(f"cannot start the MQTT network thread for {self.address}")
        return client

    # -- paho callbacks (network thread: record and return) ----------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self._refusal = f"the broker refused the connection: {reason_code}"
            log.error("MQTT broker at %s refused the publisher: %s", self.address, reason_code)
            return
        self._refusal = None
        self.connections += 1
        self._connected.set()
        log.info("jobs' MQTT publisher connected to %s", self.address)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._connected.clear()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            self._refused[mid] = str(reason_code)


_lock = threading.Lock()
_publisher: MqttPublisher | None = None


def get_publisher(settings: Settings) -> MqttPublisher:
    """The process-wide publisher, made on first use from `settings` (it connects lazily)."""
    global _publisher
    with _lock:
        if _publisher is None:
            _publisher = MqttPublisher(settings)
        return _publisher


def reset() -> None:
    """Close and forget the process-wide publisher (at exit, in tests, in a forked child)."""
    global _publisher
    with _lock:
        publisher, _publisher = _publisher, None
    if publisher is not None:
        publisher.close()
