"""paho clients built from the settings: protocol, credentials, TLS, limits, CONNECT options.

One place turns MQTT_* settings into a paho 2.x client, so the app's runtime
(core/mqtt.py) and the jobs' publisher (backends/mqtt_publisher.py) connect the
same way: same broker, login, TLS checks and reconnect pacing.
"""

from __future__ import annotations

import logging
import ssl
import uuid

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.settings import Settings

log = logging.getLogger(__name__)

#: Seconds before the first reconnect attempt after a lost connection (a broker
#: restart is usually back within a second); doubles per failed attempt.
RECONNECT_MIN_DELAY = 0.25
#: Seconds between reconnect attempts at most.
RECONNECT_MAX_DELAY = 30
#: Prefix of generated client ids for clean sessions (a random suffix makes each run distinct).
CLIENT_ID_PREFIX = "mqtt-jobs-"
#: Host a client connects to when MQTT_HOST is empty: where the embedded broker of
#: `--run` listens (core/broker.py), so a queue worker beside `make run` finds it.
LOOPBACK_HOST = "127.0.0.1"


def generated_client_id(prefix: str = CLIENT_ID_PREFIX) -> str:
    """A fresh random client id, for clean sessions without MQTT_CLIENT_ID."""
    return prefix + uuid.uuid4().hex[:12]


def broker_address(settings: Settings) -> tuple[str, int]:
    """(host, port) of the broker: MQTT_HOST:MQTT_PORT, or loopback when MQTT_HOST is empty."""
    return settings.mqtt_host or LOOPBACK_HOST, settings.mqtt_port


def is_mqtt5(settings: Settings) -> bool:
    """True when MQTT_PROTOCOL=5."""
    return settings.mqtt_protocol == "5"


def new_paho_client(
    settings: Settings, client_id: str, persistent: bool, manual_ack: bool = False
) -> paho.Client:
    """A paho 2.x client with the protocol, credentials, TLS and limits of `settings`.

    TLS (`Settings.mqtt_tls_enabled`) checks the broker's certificate against
    MQTT_TLS_CA, or the system's CAs when only MQTT_TLS=true is set, and its
    name against MQTT_HOST; MQTT_TLS_INSECURE=true turns both checks off.
    With `manual_ack`, received messages are acknowledged by `client.ack`.
    """
    v5 = is_mqtt5(settings)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else not persistent,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        manual_ack=manual_ack,
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
    client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)  # type: ignore[arg-type]
    return client


def connect_properties(settings: Settings, persistent: bool) -> Properties | None:
    """CONNECT properties: none on 3.1.1; on MQTT 5 Receive Maximum = MQTT_MAX_INFLIGHT
    and, for a persistent session, SessionExpiryInterval = MQTT_SESSION_EXPIRY."""
    if not is_mqtt5(settings):
        return None
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = settings.mqtt_max_inflight
    if persistent:
        properties.SessionExpiryInterval = settings.mqtt_session_expiry
    return properties


def connect_async(client: paho.Client, settings: Settings, persistent: bool) -> None:
    """Set the CONNECT parameters; the network loop connects (and reconnects) with them.

    A persistent MQTT 5 session sends clean_start=False and its expiry on EVERY
    connect (paho's default, clean start on the first connect only, would wipe
    the session at each process start).
    """
    host, port = broker_address(settings)
    if not is_mqtt5(settings):
        client.connect_async(host, port, settings.mqtt_keepalive)
        return
    client.connect_async(
        host,
        port,
        settings.mqtt_keepalive,
        clean_start=not persistent,
        properties=connect_properties(settings, persistent),
    )
