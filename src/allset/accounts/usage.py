"""Usage over time per Client: storage used and bytes transferred, one row per UTC day.

Why this shape: people read a chart of the last weeks, not a log, so a day is the unit.
Storage is *sampled* (the Client's ``used_bytes`` at that moment; the day's row keeps
the latest sample, so a finished day shows its end-of-day figure). Transfer bytes are
*counted* by the bandwidth layer, which sees every byte of every protocol per Client;
counting happens in process memory (``TransferMeter.add``: a dict update, no I/O on the
request path) and ``flush`` adds the counts to the database periodically. A crash loses
at most the counts since the last flush (a minute by default) — acceptable for a chart,
and never a byte of the Client's data.

The table is defined here with SQLAlchemy Core (migration 0008): this module is its only
reader and writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, String, Table, select

from allset.core.errors import InvalidInput, NotFound
from allset.db.engine import Database
from allset.db.models import Tenant

USAGE_DAYS = Table(
    "usage_days",
    MetaData(),
    Column("tenant_id", String(32), primary_key=True),
    Column("day", String(10), primary_key=True),  # ISO date, UTC
    Column("used_bytes", BigInteger, nullable=True),  # None: no sample that day
    Column("bytes_in", BigInteger, nullable=False, default=0),
    Column("bytes_out", BigInteger, nullable=False, default=0),
)
MAX_DAYS = 366


def _today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class UsageDay:
    day: date
    used_bytes: int  # carried forward from the last sample when a day had none
    bytes_in: int  # uploads: bytes the Client sent us
    bytes_out: int  # downloads: bytes we sent (public links included)


class TransferMeter:
    """Bytes per (Client, UTC day, direction), in memory until flushed. Thread-safe:
    the event loop adds, a worker thread takes."""

    def __init__(self, today: Callable[[], date] = _today) -> None:
        self.today = today
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], list[int]] = {}

    def add(self, tenant_id: str, bytes_in: int, bytes_out: int) -> None:
        key = (tenant_id, self.today().isoformat())
        with self._lock:
            c = self._counts.get(key)
            if c is None:
                self._counts[key] = [bytes_in, bytes_out]
            else:
                c[0] += bytes_in
                c[1] += bytes_out

    def take(self) -> dict[tuple[str, str], list[int]]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def snapshot(self) -> dict[tuple[str, str], tuple[int, int]]:
        with self._lock:
            return {k: (c[0], c[1]) for k, c in self._counts.items()}

    def give_back(self, counts: dict[tuple[str, str], list[int]]) -> None:
        """A failed flush returns its counts, to be written by the next one."""
        for (tenant_id, day), (b_in, b_out) in counts.items():
            with self._lock:
                c = self._counts.setdefault((tenant_id, day), [0, 0])
                c[0] += b_in
                c[1] += b_out


class UsageHistory:
    """Records and reads the daily rows. Blocking (database): call from a thread."""

    def __init__(self, db: Database, today: Callable[[], date] = _today) -> None:
        self.db = db
        self.today = today
        self.meter = TransferMeter(today)

    def _upsert(self, rows: list[dict[str, Any]], add_counts: bool) -> None:
        ins = self.db.insert(USAGE_DAYS).values(rows)
        excluded = ins.excluded
        if add_counts:
            changes = {
                "bytes_in": USAGE_DAYS.c.bytes_in + excluded.bytes_in,
                "bytes_out": USAGE_DAYS.c.bytes_out + excluded.bytes_out,
            }
        else:
            changes = {"used_bytes": excluded.used_bytes}
        with self.db.write_conn() as conn:
            conn.execute(
                ins.on_conflict_do_update(index_elements=["tenant_id", "day"], set_=changes)
            )

    def sample_storage(self) -> int:
        """Today's storage figure for every Client (latest sample wins); returns how
        many Clients were sampled."""
        day = self.today().isoformat()
        with self.db.read() as s:
            rows = [
                {"tenant_id": tid, "day": day, "used_bytes": used, "bytes_in": 0, "bytes_out": 0}
                for tid, used in s.execute(select(Tenant.id, Tenant.used_bytes))
            ]
        for i in range(0, len(rows), 500):
            self._upsert(rows[i : i + 500], add_counts=False)
        return len(rows)

    def flush(self) -> int:
        """Add the metered transfer bytes to their days; returns the rows touched. On a
        database error the counts go back to the meter and the error is raised."""
        counts = self.meter.take()
        if not counts:
            return 0
        rows = [
            {"tenant_id": tid, "day": day, "used_bytes": None, "bytes_in": c[0], "bytes_out": c[1]}
            for (tid, day), c in counts.items()
        ]
        try:
            for i in range(0, len(rows), 500):
                self._upsert(rows[i : i + 500], add_counts=True)
        except Exception:
            self.meter.give_back(counts)
            raise
        return len(rows)

    def history(self, tenant_id: str, days: int = 30) -> list[UsageDay]:
        """The last ``days`` UTC days, oldest first, today included. A day without a
        storage sample shows the last earlier one (storage does not vanish overnight);
        days before the first sample show 0; today shows the current figure. Counts
        still in memory are included, so the chart shows this minute's transfers too."""
        if not 1 <= days <= MAX_DAYS:
            raise InvalidInput(f"Choose between 1 and {MAX_DAYS} days.")
        end = self.today()
        start = end - timedelta(days=days - 1)
        with self.db.read() as s:
            tenant = s.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound("No such Client.")
            used_now = int(tenant.used_bytes)
            before = s.execute(
                select(USAGE_DAYS.c.used_bytes)
                .where(
                    USAGE_DAYS.c.tenant_id == tenant_id,
                    USAGE_DAYS.c.day < start.isoformat(),
                    USAGE_DAYS.c.used_bytes.is_not(None),
                )
                .order_by(USAGE_DAYS.c.day.desc())
                .limit(1)
            ).scalar()
            rows = {
                r.day: r
                for r in s.execute(
                    select(USAGE_DAYS).where(
                        USAGE_DAYS.c.tenant_id == tenant_id,
                        USAGE_DAYS.c.day >= start.isoformat(),
                        USAGE_DAYS.c.day <= end.isoformat(),
                    )
                )
            }
        pending = {day: c for (tid, day), c in self.meter.snapshot().items() if tid == tenant_id}
        out: list[UsageDay] = []
        used = int(before or 0)
        for i in range(days):
            d = start + timedelta(days=i)
            key = d.isoformat()
            row = rows.get(key)
            extra = pending.get(key, (0, 0))
            if row is not None and row.used_bytes is not None:
                used = int(row.used_bytes)
            if d == end:
                used = used_now  # today: the figure of this moment, not the last sample
            b_in = (int(row.bytes_in) if row is not None else 0) + extra[0]
            b_out = (int(row.bytes_out) if row is not None else 0) + extra[1]
            out.append(UsageDay(d, used, b_in, b_out))
        return out
