"""Recycling: at its capacity, the archive deletes its oldest studies to make room for a new instance.

Which studies go: the oldest by first-stored time (study_key: a study's row is inserted
when its first instance is committed, and keys only grow while the oldest are the ones
deleted), quiet studies first (no instance committed for `quiet_seconds`, the same notion
of quiet as migration's), so a study another association is storing right now is taken
only when nothing else would make room. The study of the incoming instance is never taken.

Order: the index rows go first, in one transaction, then the files. A C-FIND or C-GET that
starts after the commit no longer sees the study; one that read a path just before finds
the file gone and fails that instance, as for any concurrent delete. The other order would
leave committed rows pointing at missing files, and a crash between the two steps would
keep them there. What a crash between commit and unlink leaves is files no row names: disk
space, never a wrong answer.

Make room and claim it in one step: the transaction that deletes the studies also inserts
a claim for the incoming instance's bytes (index.add_claim), and every commit counts the
claims of others as used. Freeing room without claiming it was a race: between recycling's
commit and the store's own row (file fsync, folder fsync, group commit), any other store, in
this worker or another, could commit into that room first; the store then recycled again,
lost again, and after a few attempts answered A700 "at capacity" while older studies existed.
A store whose claim is never used (a write error, a duplicate) gives it back (`release`).

Across worker processes, SQLite's write lock (BEGIN IMMEDIATE) makes one recycler at a
time: a second waits, then re-reads the usage and the claims in its own transaction and frees
only what is still missing. Within a process a lock keeps threads off the one connection.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from server_under_test.storage.files import TierSet
from server_under_test.storage.index import (
    add_claim,
    claimed_bytes,
    connect,
    count_recycled,
    drop_claim,
    remove_study,
    used_bytes,
)

log = logging.getLogger("server_under_test.storage.recycling")


class Recycler:
    """Makes room under the archive's capacity by deleting the oldest studies from the index and the tiers."""

    def __init__(
        self, index_path: Path, tiers: TierSet, capacity: int, synchronous: str = "FULL", quiet_seconds: float = 2.0
    ):
        self.index_path = index_path
        self.tiers = tiers
        self.capacity = capacity
        self.synchronous = synchronous
        self.quiet_seconds = quiet_seconds
        self._lock = threading.Lock()
        self._db = None

    @property
    def db(self):
        if self._db is None:
            self._db = connect(self.index_path, self.synchronous)
        return self._db

    def claim_room(self, size: int, study_uid: str = "") -> int | None:
        """Recycle until `size` more bytes fit beside every claim, and claim them for one store.

        The claim's key (for Index.add), or None (and nothing deleted) when the room cannot be made.
        """
        if size > self.capacity:
            return None
        with self._lock:
            claimed = self._claim_in_index(size, study_uid)
        if claimed is None:
            return None
        claim, files = claimed
        for path, _size in files:
            self._remove_file(Path(path))
        return claim

    def release(self, claim: int) -> None:
        """Give back a claim its store did not use (a claim its row consumed is gone already)."""
        with self._lock:
            drop_claim(self.db, claim)

    def _claim_in_index(self, size: int, study_uid: str) -> tuple[int, list[tuple[str, int]]] | None:
        """Delete the oldest studies' rows until `size` fits and claim it, in one transaction: (claim, files)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            used = used_bytes(db) + claimed_bytes(db)
            files: list[tuple[str, int]] = []
            studies = 0
            while used + size > self.capacity:
                oldest = self._oldest_study(db, study_uid)
                if oldest is None:  # even an archive of this study alone has no room: keep everything
                    db.execute("ROLLBACK")
                    return None
                removed = remove_study(db, oldest[0])
                used -= sum(s for _, s in removed)
                files += removed
                studies += 1
                log.info(
                    "recycled study %s (%d instances, %.1f MB) to make room",
                    oldest[1],
                    len(removed),
                    sum(s for _, s in removed) / 1e6,
                )
            if studies:
                count_recycled(db, studies, len(files), sum(s for _, s in files))
            claim = add_claim(db, size)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return claim, files

    def _oldest_study(self, db, keep_study_uid: str) -> tuple[int, str] | None:
        busy_since = time.time() - self.quiet_seconds
        return db.execute(
            "SELECT study_key, study_uid FROM study WHERE study_uid != ? ORDER BY updated_at >= ?, study_key LIMIT 1",
            (keep_study_uid, busy_since),
        ).fetchone()

    def _remove_file(self, path: Path) -> None:
        # No fsync of the folder: an unlink lost in a crash leaves a file no row names, never a row without its file.
        store = self.tiers.store_for_path(path)
        if store is not None:
            store.remove(path)
        else:
            path.unlink(missing_ok=True)
