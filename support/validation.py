"""pydantic validation errors in one line, the same for message bodies and job arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Most field errors quoted in one line (the rest are counted).
MAX_QUOTED_ERRORS = 10


def describe_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """`value: Input should be a valid number; id: Field required` from pydantic's
    `ValidationError.errors()`; a path of `payload` stands for the whole value."""
    parts = [
        f"{'.'.join(str(part) for part in error.get('loc', ())) or 'payload'}: {error.get('msg')}"
        for error in errors[:MAX_QUOTED_ERRORS]
    ]
    if len(errors) > MAX_QUOTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_QUOTED_ERRORS} more")
    return "; ".join(parts)
