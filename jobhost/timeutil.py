"""Wall time from an injected clock, always as aware UTC datetimes."""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.internet.interfaces import IReactorTime


def now(clock: IReactorTime) -> datetime:
    """Return the clock's current time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.seconds(), tz=timezone.utc)


def to_iso(value: datetime | None) -> str | None:
    """Render an aware datetime as RFC 3339 text (``Z`` suffix), or None."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def from_iso(text: str | None) -> datetime | None:
    """Parse RFC 3339 text into an aware UTC datetime, or None."""
    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


__all__ = ["from_iso", "now", "to_iso"]
