"""The JSON payloads devices send, as pydantic models (typed handler bodies, job arguments)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Reading(BaseModel):
    """A telemetry payload: `{"value": 21.5, "id": "r-1", "ts": 1700000000.0}`.

    `id` is the device's own id for the reading (unique per device): a message
    delivered twice then stores its reading once. `ts` is when the device took
    it (unix seconds). Strict: `"21.5"` or `true` is not a value.
    """

    model_config = ConfigDict(strict=True)

    value: float
    id: str | None = Field(default=None, min_length=1, max_length=64)
    ts: float | None = None
