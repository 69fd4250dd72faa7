"""Which gallery rows a search, listing or deletion is about: `Where`, and the times and ages it is written in.

Times are kept two ways in a gallery row: the ISO 8601 text the user gave (`timestamp`, shown as given) and the
same instant as UTC seconds (`time`, what filters compare). A time without a zone is read as UTC, so the same text
always means the same instant, whatever the machine's zone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from spanet.errors import SpanetError

__all__ = ["Where", "to_seconds", "parse_time", "parse_age", "where_sql", "where_from_text", "iso_utc", "narrow"]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Where:
    """A conjunction of conditions on gallery rows; a field left None does not restrict."""

    ids: tuple[int, ...] | None = None
    cameras: tuple[int, ...] | None = None
    label: str | None = None
    track: int | None = None
    after: float | None = None  # UTC seconds, inclusive
    before: float | None = None  # UTC seconds, exclusive

    def __post_init__(self) -> None:
        if self.after is not None and self.before is not None and self.after > self.before:
            raise SpanetError(f"the time window is empty: after ({iso_utc(self.after)}) is later than before "
                              f"({iso_utc(self.before)}); swap them")  # fmt: skip

    @property
    def empty(self) -> bool:
        """True when nothing is restricted (every row matches)."""
        return all(getattr(self, name) is None for name in ("ids", "cameras", "label", "track", "after", "before"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("ids", "cameras", "label", "track"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        for name in ("after", "before"):
            value = getattr(self, name)
            if value is not None:
                out[name] = iso_utc(value)
        return out


def to_seconds(timestamp: str | None) -> float | None:
    """UTC seconds of an ISO 8601 text (no zone = UTC), or None for None; a text that is not ISO 8601 is None."""
    if not timestamp:
        return None
    try:
        moment = dt.datetime.fromisoformat(timestamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def parse_time(text: str, *, option: str) -> float:
    """UTC seconds of a command-line or form time (`option` names it in the error)."""
    seconds = to_seconds(text)
    if seconds is None:
        raise SpanetError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2024-05-01T13:45:00, UTC unless it has a zone)")
    return seconds


def parse_age(text: str, *, option: str = "--older-than") -> float:
    """Seconds of an age such as `30d`, `12h`, `90m`, `2w`, `45s`."""
    match = _AGE.match(text or "")
    if not match or float(match[1]) <= 0:
        raise SpanetError(f"{option} {text!r} is not an age: a positive number with a unit s, m, h, d or w (e.g. 30d)")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def iso_utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).isoformat()


def where_sql(where: Where | None) -> tuple[str, list[Any]]:
    """` WHERE …` and its parameters for the entries table ('' when nothing is restricted)."""
    if where is None:
        return "", []
    terms: list[str] = []
    params: list[Any] = []
    timed = where.after is not None or where.before is not None
    # with a time window, `+camera` keeps SQLite on the (time, camera) index, which answers both without reading rows
    for column, values in (("id", where.ids), ("+camera" if timed else "camera", where.cameras)):
        if values is not None:
            terms.append(f"{column} IN ({','.join('?' * len(values))})" if values else "0")
            params.extend(int(v) for v in values)
    for column, value in (("label", where.label), ("track", where.track)):
        if value is not None:
            terms.append(f"{column} = ?")
            params.append(value)
    if where.after is not None:
        terms.append("time >= ?")
        params.append(float(where.after))
    if where.before is not None:
        terms.append("time < ?")
        params.append(float(where.before))
    return (f" WHERE {' AND '.join(terms)}" if terms else ""), params


def narrow(where: Where | None, *, camera: int | None = None, label: str | None = None) -> Where:
    """`where` further restricted to one camera and one label (a listing's `camera` and `label` options)."""
    where = where or Where()
    if camera is not None:
        kept = where.cameras if where.cameras is not None else (camera,)  # an empty set stays empty
        where = dataclasses.replace(where, cameras=tuple(c for c in kept if c == camera))
    if label is not None:
        where = dataclasses.replace(where, label=label) if where.label in (None, label) else dataclasses.replace(where, ids=())
    return where


def where_from_text(*, ids: str | None = None, cameras: str | None = None, label: str | None = None,
                    track: int | None = None, after: str | None = None, before: str | None = None) -> Where:  # fmt: skip
    """A `Where` from form or query-string text: comma-separated ids and cameras, ISO 8601 times."""
    return Where(
        ids=_numbers(ids, name="ids"), cameras=_numbers(cameras, name="cameras"), label=label or None, track=track,
        after=parse_time(after, option="after") if after else None,
        before=parse_time(before, option="before") if before else None,
    )  # fmt: skip


def _numbers(text: str | None, *, name: str) -> tuple[int, ...] | None:
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise SpanetError(f"{name} {text!r} must be whole numbers separated by commas (e.g. 1,3)")
    return tuple(int(p) for p in parts)
