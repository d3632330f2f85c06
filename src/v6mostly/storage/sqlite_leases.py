"""The DHCPv4 lease store on SQLite (an adapter of ``dhcp4.leases.LeaseStore``).

WAL journaling; each change is one committed transaction (or, under load, one per
burst of messages: group commit), so ``kill -9`` loses nothing that was
acknowledged (``synchronous=NORMAL``; ``"full"`` also survives power loss, at an
fsync per commit).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from ..dhcp4.leases import Lease


class SqliteStore:
    def __init__(self, path: str, sync: str = "normal") -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS leases ("
            " address INTEGER PRIMARY KEY, client_key BLOB NOT NULL, mac TEXT NOT NULL,"
            " subnet TEXT NOT NULL, expires REAL NOT NULL, state TEXT NOT NULL,"
            " hostname TEXT NOT NULL DEFAULT '')"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS leases_client ON leases(client_key)")
        self.grouping = False

    def load(self) -> Iterator[Lease]:
        for row in self.db.execute(
            "SELECT address, client_key, mac, subnet, expires, state, hostname FROM leases"
        ):
            yield Lease(row[0], bytes(row[1]), row[2], row[3], row[4], row[5], row[6])

    def save(self, lease: Lease) -> None:
        if self.grouping and not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute(
            "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                lease.address,
                lease.client_key,
                lease.mac,
                lease.subnet,
                lease.expires,
                lease.state,
                lease.hostname,
            ),
        )

    def delete(self, address: int) -> None:
        if self.grouping and not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute("DELETE FROM leases WHERE address = ?", (address,))

    def begin(self) -> None:
        """Group commit: the changes of one burst of messages become one transaction
        (opened at the first change, so a burst without changes costs nothing)."""
        self.grouping = True

    def commit(self) -> None:
        self.grouping = False
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.commit()
        self.db.close()
