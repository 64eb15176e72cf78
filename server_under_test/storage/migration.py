"""Tier migration: when a tier passes its high watermark, move its oldest studies one tier down.

Files are copied first (atomically, fsynced), then one short transaction points the index
rows at the copies, then the originals are deleted. Ingest never waits for a copy; a
retrieve that raced with the move finds the new path in the index. An instance replaced
while its study was moving keeps the new file and the stale copy is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from server_under_test.config import ArchiveConfig
from server_under_test.storage.files import TierSet
from server_under_test.storage.index import connect

log = logging.getLogger("server_under_test.storage.migration")


class Migrator:
    def __init__(self, config: ArchiveConfig, index_path: Path, tiers: TierSet, metrics=None):
        self.config = config
        self.tiers = tiers
        self.index_path = index_path
        self.metrics = metrics
        self.moved_studies = 0
        self.moved_bytes = 0
        self._db = None

    @property
    def db(self):
        if self._db is None:
            self._db = connect(self.index_path, "FULL" if self.config.fsync else "OFF")
        return self._db

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.config.migration_interval):
            try:
                self.migrate_once()
            except Exception:  # keep migrating later; never take the supervisor down
                log.exception("migration pass failed")

    def usage(self) -> dict[int, int]:
        return {t: b for t, b in self.db.execute("SELECT tier, bytes FROM tier_usage")}

    def migrate_once(self) -> int:
        """One pass over all tiers; return the number of studies moved."""
        moved = 0
        tiers = self.tiers.tiers
        for number, tier in enumerate(tiers[:-1]):
            if tier.capacity == 0:
                continue
            used = self.usage().get(number, 0)
            if used <= tier.high_watermark * tier.capacity:
                continue
            goal = tier.low_watermark * tier.capacity
            for study_key, study_uid in self._oldest_studies(number):
                used -= self.move_study(study_key, study_uid, number, number + 1)
                moved += 1
                if used <= goal:
                    break
        return moved

    def _oldest_studies(self, tier: int) -> list[tuple[int, str]]:
        quiet_before = time.time() - self.config.migration_min_age
        return self.db.execute(
            "SELECT s.study_key, s.study_uid FROM study s WHERE s.updated_at < ? AND EXISTS ("
            " SELECT 1 FROM series r JOIN instance i ON i.series_key = r.series_key"
            " WHERE r.study_key = s.study_key AND i.tier = ?) ORDER BY s.updated_at LIMIT 100",
            (quiet_before, tier),
        ).fetchall()

    def move_study(self, study_key: int, study_uid: str, source: int, target: int) -> int:
        """Move one study's instances from tier `source` to `target`; return bytes moved."""
        rows = self.db.execute(
            "SELECT i.instance_key, i.sop_uid, i.path, i.size, r.series_uid FROM instance i "
            "JOIN series r ON r.series_key = i.series_key WHERE r.study_key = ? AND i.tier = ?",
            (study_key, source),
        ).fetchall()
        store = self.tiers.stores[target]
        copies = []
        for instance_key, sop_uid, path, size, series_uid in rows:
            new_path = store.path_for(study_uid, series_uid, sop_uid)
            store.copy_in(Path(path), new_path)
            copies.append((instance_key, path, str(new_path), size))
        moved = self._repoint(copies, source, target)
        for instance_key, old_path, _new_path, _size in copies:
            if instance_key in moved:
                self.tiers.stores[source].remove(Path(old_path))
            elif Path(new_path) != Path(old_path):
                store.remove(Path(new_path))  # replaced meanwhile: the copy is stale
        moved_bytes = sum(size for key, _, _, size in copies if key in moved)
        if moved:
            self.moved_studies += 1
            self.moved_bytes += moved_bytes
            if self.metrics:
                self.metrics.migrated_studies.labels(str(source), str(target)).inc()
                self.metrics.migrated_bytes.labels(str(source), str(target)).inc(moved_bytes)
            log.info(
                "moved study %s (%d instances, %.1f MB) from tier %d to %d",
                study_uid,
                len(moved),
                moved_bytes / 1e6,
                source,
                target,
            )
        return moved_bytes

    def _repoint(self, copies: list[tuple], source: int, target: int) -> set[int]:
        db = self.db
        moved = set()
        db.execute("BEGIN IMMEDIATE")
        try:
            for instance_key, old_path, new_path, _size in copies:
                cursor = db.execute(
                    "UPDATE instance SET tier=?, path=? WHERE instance_key=? AND path=? AND tier=?",
                    (target, new_path, instance_key, old_path, source),
                )
                if cursor.rowcount == 1:
                    moved.add(instance_key)
            moved_bytes = sum(size for key, _, _, size in copies if key in moved)
            db.execute(
                "INSERT INTO tier_usage(tier, bytes, files) VALUES (?,0,0) ON CONFLICT(tier) DO NOTHING", (target,)
            )
            db.execute(
                "UPDATE tier_usage SET bytes = bytes - ?, files = files - ? WHERE tier=?",
                (moved_bytes, len(moved), source),
            )
            db.execute(
                "UPDATE tier_usage SET bytes = bytes + ?, files = files + ? WHERE tier=?",
                (moved_bytes, len(moved), target),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return moved
