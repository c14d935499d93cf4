"""When a pipeline fires: a cron expression in an IANA time zone, or a fixed interval. Pure functions.

Slots are instants in UTC. A cron slot is computed in the pipeline's zone (so "06:00
Europe/Berlin" stays 06:00 across daylight saving time); an interval slot is the previous
slot plus the interval, so slots do not drift with the scheduler's own delays.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from factory.errors import InvalidInput

# How many due slots are counted one by one after a long outage (a cron every minute, down a day).
MAX_COUNTED_SLOTS = 10_000


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("unknown time zone: use an IANA name such as 'Europe/Berlin'",
                           field="schedule.timezone") from None


def check(schedule: dict[str, object], min_interval_s: int) -> None:
    """A 422 naming the field for an invalid cron expression, an unknown zone or too short an interval."""
    cron = schedule.get("cron")
    if cron is not None:
        text = str(cron)
        if len(text.split()) != 5 or not croniter.is_valid(text):
            raise InvalidInput("invalid cron expression: five fields, minute hour day-of-month month day-of-week",
                               field="schedule.cron")
        zone(str(schedule.get("timezone") or "UTC"))
        return
    every = schedule.get("every_seconds")
    if not isinstance(every, int) or every < min_interval_s:
        raise InvalidInput(f"every_seconds must be at least {min_interval_s} (FACTORY_PIPELINE_MIN_INTERVAL_S)",
                           field="schedule.every_seconds")


def next_after(schedule: dict[str, object], moment: datetime) -> datetime:
    """The first slot strictly after ``moment`` (for an interval: ``moment`` is a slot, or the save time)."""
    cron = schedule.get("cron")
    if cron is None:
        return moment + timedelta(seconds=int(str(schedule["every_seconds"])))
    local = moment.astimezone(zone(str(schedule.get("timezone") or "UTC")))
    following: datetime = croniter(str(cron), local).get_next(datetime)
    return following.astimezone(UTC)


def latest_due(schedule: dict[str, object], first: datetime, now: datetime) -> tuple[datetime, int]:
    """Of the slots from ``first`` (due: ``first <= now``) up to ``now``: the latest, and how many there are
    (counted up to MAX_COUNTED_SLOTS)."""
    every = schedule.get("every_seconds")
    if schedule.get("cron") is None and isinstance(every, int):
        steps = int((now - first).total_seconds() // every)
        return first + timedelta(seconds=steps * every), steps + 1
    latest, count = first, 1
    while count < MAX_COUNTED_SLOTS:
        following = next_after(schedule, latest)
        if following > now:
            break
        latest, count = following, count + 1
    return latest, count


def upcoming(schedule: dict[str, object], first: datetime | None, n: int = 3) -> list[datetime]:
    """The next ``n`` slots from ``first`` (the pipeline's next fire time), to show."""
    if first is None:
        return []
    slots = [first]
    while len(slots) < n:
        slots.append(next_after(schedule, slots[-1]))
    return slots
