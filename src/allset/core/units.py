"""Parsing of the sizes, rates and durations the command line and settings accept.

INTERFACES.md: sizes ``10GiB``, ``500MB``, ``1048576``; rates ``100Mbit``, ``12.5MB``
(per second); durations ``30m``, ``7d``, or an ISO 8601 instant.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from allset.core.errors import InvalidInput

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_RATE_BITS = {"bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z/]*)\s*$")
_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str | int) -> int:
    """Bytes from ``10GiB``/``500MB``/``1048576``; the error names accepted forms."""
    if isinstance(text, int):
        return text
    m = _NUMBER.match(text)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise InvalidInput(f"Cannot read size {text!r}; write e.g. 10GiB, 500MB or 1048576.")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_rate(text: str | int) -> int:
    """Bytes per second from ``100Mbit``, ``12.5MB`` or a plain byte count."""
    if isinstance(text, int):
        return text
    m = _NUMBER.match(text)
    if not m:
        raise InvalidInput(f"Cannot read rate {text!r}; write e.g. 100Mbit or 12.5MB.")
    unit = m.group(2).lower().removesuffix("/s").removesuffix("ps")
    value = float(m.group(1))
    if unit in _RATE_BITS:
        return int(value * _RATE_BITS[unit] / 8)
    if unit in _SIZE_UNITS:
        return int(value * _SIZE_UNITS[unit])
    raise InvalidInput(f"Cannot read rate {text!r}; write e.g. 100Mbit or 12.5MB.")


def format_size(n: int) -> str:
    """Human-readable bytes, binary units, for messages people read."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


def parse_duration(text: str) -> timedelta:
    """A relative duration (``30m``, ``7d``); see :func:`parse_deadline` for instants."""
    m = re.match(r"^\s*([0-9]+)\s*([smhdw])\s*$", text)
    if not m:
        raise InvalidInput(f"Cannot read duration {text!r}; write e.g. 30m, 12h or 7d.")
    return timedelta(seconds=int(m.group(1)) * _DURATION[m.group(2)])


def parse_deadline(text: str, now: datetime | None = None) -> datetime:
    """An instant: a duration from ``now`` or an ISO 8601 date-time with offset."""
    now = now or datetime.now(UTC)
    try:
        return now + parse_duration(text)
    except InvalidInput:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(
            f"Cannot read {text!r}; write a duration (30m, 7d) or 2026-12-31T18:00:00+01:00."
        ) from exc
    if when.tzinfo is None:
        raise InvalidInput(f"{text!r} has no time zone; add one, e.g. +01:00.")
    return when
