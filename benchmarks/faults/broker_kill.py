"""Scenario 3: the broker killed with SIGKILL mid-stream and restarted, with the defaults
(persistent session under the derived client id, the broker's persistence every second).

2,000 QoS 1 messages at 200/s; the private mosquitto is killed 3 s in and restarted
2 s later. Expect 0 lost on a plain route, except what Mosquitto itself had not saved:
it writes its state every `autosave_interval` (1 s here, core.broker.AUTOSAVE_INTERVAL),
so a message it acknowledged less than that before the kill and had not yet delivered
to the app (the app's in-flight window was full) dies with it. Each lost message is
checked against that window; any other loss fails. A `shared=True` route is run too:
Mosquitto (2.0) does not keep `$share` subscriptions across a restart, so what is
published between the broker's restart and the app's resubscription has no subscriber
and is dropped; that window is reported.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from benchmarks.faults.backends import backend
from benchmarks.faults.common import DRIVERS, Case, Outcome, Probe, base_env, judge, scaled
from benchmarks.faults.probe.routes import DIRECT_TOPIC, SHARED_TOPIC
from benchmarks.faults.system import stream_through_app
from core.broker import AUTOSAVE_INTERVAL
from tests.mqtt_helpers import PrivateMosquitto

FAMILY = "broker_kill"
NAME = "3 broker kill -9"
SHARED = "3s broker kill -9, shared route"
SCENARIOS = {
    NAME: "0 lost with the defaults (persistent session, broker persistence)",
    SHARED: "Mosquitto forgets $share subscriptions on restart: what is published before "
    "the app resubscribes may be lost",
}
#: Seconds of acknowledged messages a killed broker may not have saved (its autosave
#: interval, core.broker.AUTOSAVE_INTERVAL, plus scheduling slack).
UNSAVED = AUTOSAVE_INTERVAL + 0.5
#: Stream rate, seconds into the stream of the kill, and the outage.
RATE = 200.0
KILL_AT = 3.0
DOWN_FOR = 2.0


def run(driver: str, shared: bool, folder: Path) -> Outcome:
    """Scenario 3 on `driver`, on the plain or the shared probe route."""
    count = scaled(2000, 200)
    name = SHARED if shared else NAME
    outcome = Outcome(name, driver, 0, 0, 0, 0, 0, 0, SCENARIOS[name])
    probe = Probe(folder / "probe")
    started = time.monotonic()
    broker = PrivateMosquitto(folder / "mqtt")

    moments: dict[str, float] = {}

    def fault(span: float) -> None:
        time.sleep(min(KILL_AT, span / 3))
        moments["kill"] = time.monotonic()
        broker.kill()
        time.sleep(DOWN_FOR)
        broker.start()

    try:
        with backend(driver, folder / "backend", base_env(probe)) as found:
            topic = SHARED_TOPIC if shared else DIRECT_TOPIC
            result = stream_through_app(
                found, broker, probe, folder, count, RATE, fault, topic=topic, resubscribes=True
            )
    finally:
        broker.stop()
    outcome.seconds = round(time.monotonic() - started, 1)
    outcome.published, outcome.acknowledged = result.published, len(result.acked)
    outcome.queued = result.queued
    outcome.explanation = f"broker down {DOWN_FOR:.0f} s; {result.dead_letters} dead letters"
    kill = moments.get("kill", 0.0)
    if shared:  # unsaved, or published before the app resubscribed after the restart
        window = f"from {UNSAVED:.1f} s before the kill until the app resubscribed"
        explained = result.published_between(kill - UNSAVED, result.resubscribed_at)
    else:
        window = f"in the {UNSAVED:.1f} s before the kill (not yet saved by the broker)"
        explained = result.published_between(kill - UNSAVED, kill)
    return judge(outcome, result.acked, result.runs, result.dead_letters == 0, "dead letters",
                 explained=explained, window=window)  # fmt: skip


def cases() -> list[Case]:
    """Scenario 3 on every driver; its shared-route variant on Redis (the broker's
    behaviour does not depend on the driver)."""
    plain = [Case(NAME, d, SCENARIOS[NAME], partial(run, d, False)) for d in DRIVERS]
    return [*plain, Case(SHARED, "redis", SCENARIOS[SHARED], partial(run, "redis", True))]
