"""The shipped broker configuration, run for real: passwords, ACL, limits and TLS.

A private mosquitto runs docker/mosquitto/mosquitto.conf with only its ports and
paths changed; its credentials are written by the compose one-shot
docker/mosquitto/init-auth.sh from a hashed device list, and its certificate by
docker/make-certs.sh. Devices `d1` and `d2` and the app then try what an
attacker on the network would.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from app.jobs.reboot_device import RebootDevice
from backends.mqtt_publisher import MqttPublishRefused
from core.broker import free_port
from core.message import Message
from core.router import Router
from queues import connections
from tests.conftest import need_binaries
from tests.mqtt_helpers import WAIT_TIMEOUT, make_settings, running_runtime, wait_until
from tests.tls_helpers import Certificates, make_certificates, stop, wait_listening

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
APP_PASSWORD = "app-Pa55word-for-tests"
DEVICE_PASSWORDS = {"d1": "d1-Pa55word-long", "d2": "d2-Pa55word-long"}
#: The app's $share group: a secret in the deployment (MQTT_GROUP_NAME).
SECRET_GROUP = secrets.token_hex(8)
#: Bytes above the shipped max_packet_size (65536) once topic and headers are added.
OVERSIZED_PAYLOAD = 70_000


def local_config(conf: str, plain: int, tls: int, folder: Path) -> str:
    """The shipped mosquitto.conf with loopback ports and `folder` paths, unchanged otherwise."""
    replacements = [
        (r"^listener 1883$", f"listener {plain} 127.0.0.1"),
        (r"^listener 8883$", f"listener {tls} 127.0.0.1"),
        (r"/mosquitto/auth/", f"{folder / 'auth'}/"),
        (r"/mosquitto/data/", f"{folder / 'data'}/"),
        (r"^log_dest stdout$", f"log_dest file {folder / 'mosquitto.log'}"),
    ]
    for pattern, replacement in replacements:
        conf, count = re.subn(pattern, replacement, conf, flags=re.M)
        assert count, f"mosquitto.conf no longer has {pattern!r}: update this test"
    return conf + f"\nuser {getpass.getuser()}\n"


def write_credentials(folder: Path, certs: Certificates) -> subprocess.CompletedProcess[str]:
    """Run the compose one-shot init-auth.sh on a hashed device list (as an operator would)."""
    devices = folder / "mqtt-devices"
    devices.write_text("".join(f"{d}:{p}\n" for d, p in DEVICE_PASSWORDS.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(devices)], check=True, capture_output=True)
    return subprocess.run(
        ["sh", str(DOCKER / "mosquitto" / "init-auth.sh")],
        env={
            "PATH": os.environ["PATH"],
            "AUTH_DIR": str(folder / "auth"),
            "ACL_FILE": str(DOCKER / "mosquitto" / "acl"),
            "DEVICES_FILE": str(devices),
            "CERT_DIR": str(certs.folder),
            "MQTT_PASSWORD": APP_PASSWORD,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class DeployedBroker:
    """The shipped broker on loopback: a plain port (compose-internal) and the TLS port."""

    plain_port: int
    tls_port: int
    certs: Certificates
    auth: Path


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedBroker]:
    need_binaries("mosquitto", "mosquitto_passwd", "mosquitto_sub", "openssl")
    folder = tmp_path_factory.mktemp("deployed-broker")
    certs = make_certificates(folder / "certs")
    result = write_credentials(folder, certs)
    assert result.returncode == 0, result.stderr
    (folder / "data").mkdir()
    plain, tls = free_port(), free_port()
    config = folder / "mosquitto.conf"
    config.write_text(
        local_config((DOCKER / "mosquitto" / "mosquitto.conf").read_text(), plain, tls, folder)
    )
    process = subprocess.Popen(["mosquitto", "-c", str(config)], stderr=subprocess.PIPE)
    try:
        wait_listening(process, plain, "mosquitto with the shipped config")
        wait_listening(process, tls, "mosquitto's TLS listener")
        yield DeployedBroker(plain, tls, certs, folder / "auth")
    finally:
        stop(process)


@dataclass
class Client:
    """A paho MQTT 5 client that records what the broker answered and delivered."""

    username: str | None
    password: str | None
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    connack: ReasonCode | None = None
    disconnect: ReasonCode | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.mqtt = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"deploy-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if self.username is not None:
            self.mqtt.username_pw_set(self.username, self.password)
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_message = self._on_message
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_publish = self._on_publish

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connack = reason

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.disconnect = reason

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        self.subacks[mid] = codes

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self.pubacks[mid] = reason

    def connect(self, port: int, ca: str | None = None, host: str = "127.0.0.1") -> Client:
        """Connect (over TLS trusting `ca` when given) and wait for the CONNACK."""
        if ca is not None:
            self.mqtt.tls_set(ca_certs=ca)
        self.mqtt.connect(host, port)
        self.mqtt.loop_start()
        assert wait_until(lambda: self.connack is not None), "no CONNACK"
        return self

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        _, mid = self.mqtt.subscribe(topic_filter, 1)
        assert wait_until(lambda: mid in self.subacks), f"no SUBACK for {topic_filter}"

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1; the PUBACK's reason code."""
        mid = self.mqtt.publish(topic, payload, 1).mid
        assert wait_until(lambda: mid in self.pubacks), f"no PUBACK for {topic}"
        return self.pubacks[mid]

    def received(self) -> list[tuple[str, bytes]]:
        """Every (topic, payload) delivered so far."""
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients a test opens; all closed after it."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def _connect(
    broker: DeployedBroker, opened: list[Client], username: str | None, tls: bool = False
) -> Client:
    password = APP_PASSWORD if username == "app" else DEVICE_PASSWORDS.get(username or "")
    client = Client(username, password)
    opened.append(client)
    if tls:
        return client.connect(broker.tls_port, ca=broker.certs.ca, host="localhost")
    return client.connect(broker.plain_port)


def test_anonymous_clients_and_wrong_passwords_are_refused(
    broker: DeployedBroker, clients: list[Client]
) -> None:
    anonymous = _connect(broker, clients, None)
    assert anonymous.connack is not None and anonymous.connack.is_failure
    impostor = Client("d1", "not-the-password")
    clients.append(impostor)
    impostor.connect(broker.plain_port)
    assert impostor.connack is not None and impostor.connack.is_failure
    lines = (broker.auth / "passwords").read_text().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["app", "d1", "d2", "healthcheck"]
    assert all(line.split(":", 1)[1].startswith("$7$") for line in lines), "unhashed password"


def test_a_device_publishes_only_under_its_own_prefix(
    broker: DeployedBroker, clients: list[Client]
) -> None:
    app = _connect(broker, clients, "app")
    app.subscribe("devices/+/telemetry")
    d1 = _connect(broker, clients, "d1")
    assert d1.publish("devices/d2/telemetry", b"forged").getName() == "Not authorized"
    assert d1.publish("deadletter/devices/d2/telemetry", b"forged").is_failure
    assert not d1.publish("devices/d1/telemetry", b"genuine").is_failure
    assert wait_until(lambda: len(app.received()) >= 1)
    assert app.received() == [("devices/d1/telemetry", b"genuine")]


def test_a_device_subscribed_to_everything_receives_only_its_own_topics(
    broker: DeployedBroker, clients: list[Client]
) -> None:
    d1 = _connect(broker, clients, "d1")
    for topic_filter in ("#", "deadletter/#", "$SYS/#", "devices/+/telemetry", "devices/d2/#"):
        d1.subscribe(topic_filter)
    app = _connect(broker, clients, "app")
    d2 = _connect(broker, clients, "d2")
    assert not app.publish("deadletter/devices/d2/telemetry", b"d2's payload").is_failure
    assert not app.publish("devices/d2/commands/reboot", b"{}").is_failure
    assert not d2.publish("devices/d2/telemetry", b"d2 reading").is_failure
    assert not app.publish("devices/d1/commands/reboot", b"for d1").is_failure
    # The last message is d1's own: once it arrived, every earlier one had its chance.
    assert wait_until(lambda: ("devices/d1/commands/reboot", b"for d1") in d1.received())
    assert {topic for topic, _ in d1.received()} == {"devices/d1/commands/reboot"}


def test_a_device_in_a_guessed_share_group_takes_nothing_from_the_app(
    broker: DeployedBroker, clients: list[Client]
) -> None:
    app = _connect(broker, clients, "app")
    app.subscribe(f"$share/{SECRET_GROUP}/devices/+/telemetry")
    thief = _connect(broker, clients, "d1")
    thief.subscribe("$share/mqtt_framework_group/devices/+/telemetry")  # the default name
    d2 = _connect(broker, clients, "d2")
    count = 20
    for i in range(count):
        assert not d2.publish("devices/d2/telemetry", str(i).encode()).is_failure
    assert wait_until(lambda: len(app.received()) >= count)
    assert [payload for _, payload in app.received()] == [str(i).encode() for i in range(count)]
    assert thief.received() == []


def test_an_oversized_packet_disconnects_its_sender_and_reaches_nobody(
    broker: DeployedBroker, clients: list[Client]
) -> None:
    app = _connect(broker, clients, "app")
    app.subscribe("devices/+/telemetry")
    d1 = _connect(broker, clients, "d1")
    d1.mqtt.publish("devices/d1/telemetry", b"x" * OVERSIZED_PAYLOAD, 1)
    assert wait_until(lambda: d1.disconnect is not None), "the broker kept the sender"
    d2 = _connect(broker, clients, "d2")
    assert not d2.publish("devices/d2/telemetry", b"small").is_failure
    assert wait_until(lambda: len(app.received()) >= 1)
    assert app.received() == [("devices/d2/telemetry", b"small")]


def test_the_tls_listener_serves_devices_that_check_the_generated_ca(
    broker: DeployedBroker, clients: list[Client]
) -> None:
    app = _connect(broker, clients, "app")
    app.subscribe("devices/+/telemetry")
    d1 = _connect(broker, clients, "d1", tls=True)  # verifies the chain and "localhost"
    assert d1.connack is not None and not d1.connack.is_failure
    assert not d1.publish("devices/d1/telemetry", b"over tls").is_failure
    assert wait_until(lambda: app.received() == [("devices/d1/telemetry", b"over tls")])
    plain_on_tls = Client("d1", DEVICE_PASSWORDS["d1"])
    clients.append(plain_on_tls)
    plain_on_tls.mqtt.connect("127.0.0.1", broker.tls_port)
    plain_on_tls.mqtt.loop_start()
    assert not wait_until(
        lambda: plain_on_tls.connack is not None and not plain_on_tls.connack.is_failure, 1.0
    ), "the TLS port accepted plain MQTT"


def test_the_app_runtime_routes_device_telemetry_through_the_secured_broker(
    broker: DeployedBroker, clients: list[Client]
) -> None:
    seen: list[tuple[str, bytes]] = []
    router = Router()

    def telemetry(message: Message) -> None:
        seen.append((message.params["device_id"], message.payload))
        message.publish(f"devices/{message.params['device_id']}/commands/ack", b"ok", qos=1)

    router.on("devices/{device_id}/telemetry", telemetry, qos=1, shared=True)
    settings = make_settings(
        "127.0.0.1",
        broker.plain_port,
        mqtt_username="app",
        mqtt_password=APP_PASSWORD,
        mqtt_group_name=SECRET_GROUP,
    )
    with running_runtime(settings, router, router.subscriptions(SECRET_GROUP)):
        d1 = _connect(broker, clients, "d1", tls=True)
        d1.subscribe("devices/d1/commands/#")
        assert not d1.publish("devices/d1/telemetry", b'{"value": 1}').is_failure
        assert wait_until(lambda: seen == [("d1", b'{"value": 1}')])
        assert wait_until(lambda: d1.received() == [("devices/d1/commands/ack", b"ok")])


def test_the_reboot_job_publishes_a_command_the_acl_lets_the_app_send_and_the_device_read(
    broker: DeployedBroker, clients: list[Client]
) -> None:
    d1 = _connect(broker, clients, "d1", tls=True)
    d1.subscribe("devices/d1/#")
    d2 = _connect(broker, clients, "d2")
    d2.subscribe("#")
    settings = make_settings(
        "127.0.0.1",
        broker.plain_port,
        mqtt_username="app",
        mqtt_password=APP_PASSWORD,
        mqtt_protocol="5",
    )
    connections.configure(settings)
    try:
        job = RebootDevice(device_id="d1", requested_by="ops")
        job.job_id = "job-1"
        job.handle()
        with pytest.raises(MqttPublishRefused, match="refused the publish to 'elsewhere/x': Not"):
            connections.get_publisher().publish("elsewhere/x", b"{}")
    finally:
        connections.reset()
    command = (
        "devices/d1/control/reboot",
        b'{"command":"reboot","requested_by":"ops","job_id":"job-1"}',
    )
    assert wait_until(lambda: d1.received() == [command])
    assert d2.received() == []


def run_compose_health_check(broker: DeployedBroker) -> subprocess.CompletedProcess[str]:
    """The mosquitto health check of docker-compose.yml, pointed at this broker."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kind, command = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.replace("$$", "$").replace("/mosquitto/auth/", f"{broker.auth}/")
    command += f" -h 127.0.0.1 -p {broker.plain_port}"
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=WAIT_TIMEOUT + 5
    )


def test_the_compose_health_check_reads_the_broker_uptime(broker: DeployedBroker) -> None:
    result = run_compose_health_check(broker)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\d+ seconds\n", result.stdout)


def test_rerunning_init_keeps_the_health_password_the_running_broker_loaded(
    broker: DeployedBroker,
) -> None:
    before = (broker.auth / "healthcheck.pw").read_text()
    result = write_credentials(broker.auth.parent, broker.certs)
    assert result.returncode == 0, result.stderr
    assert (broker.auth / "healthcheck.pw").read_text() == before
    assert run_compose_health_check(broker).returncode == 0


def test_init_refuses_plain_text_device_passwords_and_reserved_names(tmp_path: Path) -> None:
    need_binaries("mosquitto_passwd", "openssl")
    certs = make_certificates(tmp_path / "certs")
    devices = tmp_path / "mqtt-devices"
    script = ["sh", str(DOCKER / "mosquitto" / "init-auth.sh")]
    env = {
        "PATH": os.environ["PATH"],
        "AUTH_DIR": str(tmp_path / "auth"),
        "ACL_FILE": str(DOCKER / "mosquitto" / "acl"),
        "DEVICES_FILE": str(devices),
        "CERT_DIR": str(certs.folder),
        "MQTT_PASSWORD": APP_PASSWORD,
    }
    cases = {
        "d1:plain-text-password\n": "is not hashed: add devices with mosquitto_passwd",
        "app:$7$101$x$y\n": "'app' is reserved",
        "d/1:$7$101$x$y\n": "device id must be letters, digits",
    }
    for content, message in cases.items():
        devices.write_text(content)
        result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and message in result.stderr, (content, result.stderr)
    devices.write_text("")
    short = subprocess.run(
        script, env={**env, "MQTT_PASSWORD": "short"}, capture_output=True, text=True, timeout=60
    )
    assert short.returncode == 1 and "shorter than 12" in short.stderr
    shutil.rmtree(certs.folder)
    missing = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "run docker/make-certs.sh" in missing.stderr
