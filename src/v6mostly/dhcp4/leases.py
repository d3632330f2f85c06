"""Lease storage: an in-memory table the server works on, written through to SQLite.

The server decides on the in-memory :class:`LeaseTable` (fast, no I/O in the
decision) and every change of a *bound* or *declined* lease is written through
to the store before the reply leaves (``LeaseTable.save``), so an ACK the
client saw is on disk. Under load the service groups the messages of one
socket read burst into one transaction, committed before their replies go out
(group commit), which costs one WAL append per burst instead of one per lease. Offers live only in memory: after a crash a client that
was offered an address simply gets it (or another) when it requests.

:class:`LeaseStore` is the interface; the SQLite store is an adapter outside
the core (:mod:`v6mostly.storage.sqlite_leases`), the in-memory one is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

BOUND = "bound"
OFFERED = "offered"
DECLINED = "declined"


@dataclass
class Lease:
    address: int
    client_key: bytes
    mac: str
    subnet: str
    expires: float
    state: str = BOUND
    hostname: str = ""


class LeaseStore(Protocol):
    def load(self) -> Iterable[Lease]: ...
    def save(self, lease: Lease) -> None: ...
    def delete(self, address: int) -> None: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


class MemoryStore:
    """A store that keeps nothing (tests, or leases you do not need to keep)."""

    def __init__(self) -> None:
        self.saved: dict[int, Lease] = {}

    def load(self) -> Iterable[Lease]:
        return list(self.saved.values())

    def save(self, lease: Lease) -> None:
        self.saved[lease.address] = Lease(**vars(lease))

    def delete(self, address: int) -> None:
        self.saved.pop(address, None)

    def begin(self) -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


class LeaseTable:
    """All leases in memory, indexed by address and by client, with a write-through store."""

    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self.by_addr: dict[int, Lease] = {}
        self.by_client: dict[tuple[str, bytes], int] = {}
        for lease in store.load():
            self._index(lease)

    def _index(self, lease: Lease) -> None:
        old = self.by_addr.get(lease.address)
        if old is not None:
            self.by_client.pop((old.subnet, old.client_key), None)
        self.by_addr[lease.address] = lease
        if lease.state != DECLINED:
            self.by_client[(lease.subnet, lease.client_key)] = lease.address

    def of_client(self, subnet: str, key: bytes) -> Lease | None:
        a = self.by_client.get((subnet, key))
        return self.by_addr.get(a) if a is not None else None

    def at(self, address: int) -> Lease | None:
        return self.by_addr.get(address)

    def is_free(self, address: int, now: float, key: bytes | None = None) -> bool:
        lease = self.by_addr.get(address)
        if lease is None or lease.expires <= now:
            return True
        return key is not None and lease.client_key == key and lease.state != DECLINED

    def put(self, lease: Lease, persist: bool) -> None:
        self._index(lease)
        if persist:
            self.store.save(lease)

    def remove(self, address: int, persist: bool = True) -> None:
        lease = self.by_addr.pop(address, None)
        if lease is not None:
            if self.by_client.get((lease.subnet, lease.client_key)) == address:
                del self.by_client[(lease.subnet, lease.client_key)]
            if persist and lease.state != OFFERED:
                self.store.delete(address)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Changes inside are committed together at the end (before any reply is sent)."""
        self.store.begin()
        try:
            yield
        finally:
            self.store.commit()

    def count(self, subnet: str, now: float) -> int:
        return sum(
            1
            for lease in self.by_addr.values()
            if lease.subnet == subnet and lease.expires > now and lease.state != OFFERED
        )
