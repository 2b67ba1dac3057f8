"""A bounded cache of serialized records, so a page is a join of bytes built once per record.

Building a record in Python costs far more than copying its JSON, and a
sync reads each record at least once per feed and often again through
list endpoints. Each entry is valid while its record's ``modifiedOn`` is
unchanged: every change moves ``modifiedOn`` of each record whose JSON it
alters, so a change invalidates only those records.
"""

from __future__ import annotations

from array import array

from rulesd.servicetitan.simulator.state import Table

# Serialized bytes a simulator keeps by default. A medium tenant's records
# take about 1 GB as JSON; the per-record overhead is about 60 bytes more.
DEFAULT_CACHE_BYTES = 1 << 30

_INDEX_BITS = 40


class RecordCache:
    """The export-form JSON of records, keyed by (table, index) and checked against ``modifiedOn``.

    When the bytes held pass ``max_bytes``, the entries stored first are
    dropped first. Callers hold the simulator's lock: the cache itself is
    not thread-safe.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"invalid cache size {max_bytes}: must be 0 or more bytes")
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._blobs: dict[int, list[bytes | None]] = {}
        self._stamps: dict[int, array] = {}
        self._insertions = array("q")  # (table code << _INDEX_BITS) | index, oldest first
        self._head = 0

    def get(self, table: Table, index: int) -> bytes | None:
        """Return the cached JSON of a record, or None when absent or older than its ``modifiedOn``."""
        blobs = self._blobs.get(table.code)
        if blobs is not None and index < len(blobs):
            blob = blobs[index]
            if blob is not None and self._stamps[table.code][index] == table.modified[index]:
                self.hits += 1
                return blob
        self.misses += 1
        return None

    def put(self, table: Table, index: int, blob: bytes) -> None:
        """Store the JSON of a record as of its current ``modifiedOn``."""
        if len(blob) > self.max_bytes:
            return
        blobs = self._blobs.get(table.code)
        if blobs is None:
            blobs = self._blobs[table.code] = []
            self._stamps[table.code] = array("q")
        stamps = self._stamps[table.code]
        if index >= len(blobs):
            grow = table.count - len(blobs)
            blobs.extend([None] * grow)
            stamps.extend([0] * grow)
        previous = blobs[index]
        if previous is not None:
            self.size -= len(previous)
        blobs[index] = blob
        stamps[index] = table.modified[index]
        self.size += len(blob)
        self._insertions.append((table.code << _INDEX_BITS) | index)
        if self.size > self.max_bytes:
            self._evict()

    def clear(self) -> None:
        self._blobs.clear()
        self._stamps.clear()
        self._insertions = array("q")
        self._head = 0
        self.size = 0

    def _evict(self) -> None:
        """Drop the oldest entries until the cache fits ``max_bytes`` again."""
        insertions = self._insertions
        mask = (1 << _INDEX_BITS) - 1
        while self.size > self.max_bytes and self._head < len(insertions):
            key = insertions[self._head]
            self._head += 1
            blobs = self._blobs[key >> _INDEX_BITS]
            index = key & mask
            blob = blobs[index]
            # A record stored again after a change has a second, newer insertion;
            # this older one drops it early, which costs only a rebuild.
            if blob is not None:
                self.size -= len(blob)
                blobs[index] = None
        if self._head > 1_000_000 and self._head * 2 > len(insertions):
            self._insertions = insertions[self._head:]
            self._head = 0
