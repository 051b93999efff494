"""Features kept exact event by event between refreshes: the online writer's live path applies a batch's new
events to a user's published profile at once, and the SQL refresh that follows reconciles the whole profile.

What is live comes from the declarations the SQL aggregates (`behaviour.EVENT_COUNTS`, `behaviour.SEEN`,
`behaviour.local_hour`, `behaviour.local_weekday`): the event counts, first and last seen, the hour and weekday
histograms, the 7 x 24 week grid and the latest events. Everything else in a profile (rates, sessions, distinct
counts, spend, affinities, segments, scores, the summary) is the last refresh's until the next one.
"""
from __future__ import annotations

import math
from datetime import datetime

from .behaviour import EVENT_COUNTS, SEEN, local_hour, local_weekday

_FOLD = {"min": min, "max": max}
_EPOCH = datetime(1970, 1, 1)
RECENT_FIELDS = ("ts", "type", "item_id", "title", "category_id", "price", "query")


def epoch_seconds(ts: datetime) -> float:
    return (ts - _EPOCH).total_seconds()


def apply(record: dict, events: list[dict], titles: dict[str, str], recent: int = 10) -> dict:
    """`record` (a profile document, as JSON decodes it) with `events` (stored rows: ts a datetime, type, item_id,
    ...) folded into its live features; `titles`: item id -> title, for the latest events. Returns `record`."""
    offset = record.get("habit_utc_offset") or 0
    for name, kind in EVENT_COUNTS.items():
        record[name] = (record.get(name) or 0) + sum(1 for e in events if kind is None or e["type"] == kind)
    times = [e["ts"].isoformat() for e in events]  # (ISO times of one format order as the times do)
    for name, how in SEEN.items():
        record[name] = _FOLD[how](times + ([record[name]] if record.get(name) is not None else []))
    for name, width, bucket in (("hour_hist", 24, local_hour), ("dow_hist", 7, local_weekday)):
        hist = record.get(name) or [0] * width
        for e in events:
            hist[bucket(epoch_seconds(e["ts"]), offset, math.floor)] += 1
        record[name] = hist
    # newest first, as the refresh lists them (ties by event id); a new event of the same time as a listed one
    # goes after it (until the refresh, which orders the two by event id)
    latest = [_recent(e, titles) for e in sorted(events, key=lambda e: e.get("event_id") or "")]
    merged = list(record.get("recent_events") or []) + latest
    record["recent_events"] = sorted(merged, key=lambda x: x["ts"], reverse=True)[:recent]
    return record


def _recent(e: dict, titles: dict[str, str]) -> dict:
    """An event as a profile lists it: its fields that are set, the time as ISO text, the item's title."""
    out = {**{k: e.get(k) for k in RECENT_FIELDS}, "ts": e["ts"].isoformat(), "title": titles.get(e.get("item_id"))}
    return {k: v for k, v in out.items() if v is not None}


def apply_week(grid: list[list[int]], events: list[dict], offset_hours: float) -> list[list[int]]:
    """The 7 x 24 grid of event counts by weekday and hour (at the profile's offset) with `events` added."""
    for e in events:
        t = epoch_seconds(e["ts"])
        grid[local_weekday(t, offset_hours, math.floor)][local_hour(t, offset_hours, math.floor)] += 1
    return grid
