"""The durable spool: undelivered events and dead letters in SQLite (WAL)."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sipconf.webhooks")


@dataclass
class Event:
    """One spooled request. ``key`` orders it (a call's UUID): one call's events go out one
    after another; different keys go out in parallel."""

    id: int
    key: str
    url: str
    method: str
    params: dict[str, str]
    created: float
    attempts: int = 0


class Spool:
    """Undelivered events on disk (SQLite in WAL mode: a commit survives a process crash), and
    the dead letters: events no retry could deliver, kept with the reason for an operator."""

    MAX_DEAD = 10_000  # the oldest dead letters go past this many

    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open(path)
        except sqlite3.DatabaseError as exc:
            # Start-up never fails on what the spool holds: keep the bad file for a look.
            aside = path.with_name(f"{path.name}.broken-{int(time.time())}")
            log.error("webhook spool %s cannot be read (%s): moved to %s, starting empty",
                      path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(path) + suffix)
                if p.exists():
                    p.rename(Path(str(aside) + suffix))
            self.db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " key TEXT NOT NULL, url TEXT NOT NULL, method TEXT NOT NULL,"
                " params TEXT NOT NULL, created REAL NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS dead (id INTEGER PRIMARY KEY, key TEXT, url TEXT,"
                " method TEXT, params TEXT, created REAL, attempts INTEGER, reason TEXT,"
                " failed_at REAL)")
            db.execute("SELECT count(*) FROM events").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def add(self, key: str, url: str, method: str, params: Mapping[str, str],
            created: float) -> Event:
        cur = self.db.execute(
            "INSERT INTO events (key, url, method, params, created) VALUES (?, ?, ?, ?, ?)",
            (key, url, method, json.dumps(dict(params)), created))
        return Event(cur.lastrowid, key, url, method, dict(params), created)

    def pending(self) -> list[Event]:
        """Events to resume; a row that cannot be read is moved to the dead letters."""
        out = []
        rows = self.db.execute(
            "SELECT id, key, url, method, params, created, attempts FROM events ORDER BY id")
        for r in rows.fetchall():
            try:
                params = json.loads(r[4])
                if not isinstance(params, dict):
                    raise ValueError("params are not an object")
                ev = Event(int(r[0]), str(r[1]), str(r[2]), str(r[3]),
                           {str(k): str(v) for k, v in params.items()}, float(r[5]), int(r[6]))
            except (TypeError, ValueError) as exc:
                self.db.execute(
                    "INSERT OR REPLACE INTO dead (id, key, url, method, params, created,"
                    " attempts, reason, failed_at) SELECT id, key, url, method, params, created,"
                    " attempts, ?, ? FROM events WHERE id = ?",
                    (f"unreadable spool row: {exc}", time.time(), r[0]))
                self.db.execute("DELETE FROM events WHERE id = ?", (r[0],))
                continue
            out.append(ev)
        return out

    def attempted(self, ev: Event) -> None:
        self.db.execute("UPDATE events SET attempts = ? WHERE id = ?", (ev.attempts, ev.id))

    def remove(self, ev: Event) -> None:
        self.db.execute("DELETE FROM events WHERE id = ?", (ev.id,))

    def bury(self, ev: Event, reason: str) -> None:
        """Move an event to the dead letters (one transaction: never in both, never lost)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO dead (id, key, url, method, params, created, attempts,"
                " reason, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ev.id, ev.key, ev.url, ev.method, json.dumps(ev.params), ev.created,
                 ev.attempts, reason[:500], time.time()))
            self.db.execute("DELETE FROM events WHERE id = ?", (ev.id,))
            self.db.execute(
                "DELETE FROM dead WHERE id NOT IN (SELECT id FROM dead ORDER BY failed_at DESC"
                " LIMIT ?)", (self.MAX_DEAD,))

    def dead_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM dead").fetchone()[0]

    def dead_letters(self, limit: int = 100) -> list[dict]:
        rows = self.db.execute(
            "SELECT id, key, url, method, params, reason, attempts, created, failed_at FROM dead"
            " ORDER BY failed_at DESC LIMIT ?", (limit,))
        out = []
        for r in rows.fetchall():
            try:
                params = json.loads(r[4])
            except (TypeError, ValueError):
                params = r[4]
            out.append({"id": r[0], "key": r[1], "url": r[2], "method": r[3], "params": params,
                        "reason": r[5], "attempts": r[6], "created": r[7], "failed_at": r[8]})
        return out

    def forget_dead(self, dead_id: int) -> bool:
        return self.db.execute("DELETE FROM dead WHERE id = ?", (dead_id,)).rowcount > 0

    def close(self) -> None:
        self.db.close()
