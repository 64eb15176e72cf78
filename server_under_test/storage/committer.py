"""One index writer for all worker processes: every association's rows go to one committer, in the supervisor.

Why: each worker process used to commit its own rows, so the workers took turns on SQLite's write lock, each with its
own WAL sync, and with ~2 associations per worker a group held ~1 row (measured: ~1.1 WAL syncs and ~27 WAL writes per
CT instance). Now an association thread sends its row over a Unix socket and waits for the answer; the committer (a
thread of the supervisor) takes every row that has arrived, makes the group's new folder entries durable (one fsync
per distinct folder), commits the rows in one transaction (one WAL sync) and only then answers each. A store is thus
acknowledged after its file, its folder entry and its row are durable, never before. Rows that arrive while a group
commits make the next group.

The socket is SOCK_SEQPACKET (one message per row, one per answer, no framing of our own) and lives in a folder only
the archive's user can enter: whoever can write to it can add rows to the index.
"""

from __future__ import annotations

import logging
import pickle
import selectors
import socket
import threading
import time
from pathlib import Path

from server_under_test.storage.index import Index, InstanceRecord, Pending

log = logging.getLogger("server_under_test.storage.committer")
MESSAGE_BYTES = 1 << 16  # a row is under 2 KB: its UIDs, names and a path
SOCKET_NAME = "index-committer.sock"


class CommitUnknown(ConnectionError):
    """The committer went away between a row's sending and its answer: the row may or may not be committed."""


class IndexCommitter:
    """The supervisor's side: a thread that group-commits the rows every worker sends."""

    def __init__(self, index: Index, folder: Path):
        self.index = index
        self.address = str(folder / SOCKET_NAME)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(self.address)
        self.listener.listen(512)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-committer", daemon=True)
        self.groups = 0  # commits, the rows they held and the seconds they took: how well rows group, how busy
        self.rows = 0
        self.busy_seconds = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """After the workers have stopped: no row can be in flight any more."""
        self._stop.set()
        self._thread.join(10)
        if self.groups:
            log.info(
                "index committer: %d rows in %d group commits, busy %.1f s", self.rows, self.groups, self.busy_seconds
            )
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()
        Path(self.address).unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            group = []
            for key, _ in self.selector.select(0.25):
                if key.fileobj is self.listener:
                    self._accept()
                elif (item := self._receive(key.fileobj)) is not None:
                    group.append(item)
            if group:
                self._commit(group)

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except BlockingIOError:  # another select() round takes it
            return
        self.selector.register(connection, selectors.EVENT_READ)

    def _receive(self, connection: socket.socket) -> tuple[socket.socket, Pending] | None:
        """One row from an association thread, or None when its worker has closed the connection."""
        try:
            message = connection.recv(MESSAGE_BYTES)
        except OSError:
            message = b""
        if not message:
            self.selector.unregister(connection)
            connection.close()
            return None
        record, sync_dirs, claim = pickle.loads(message)
        return connection, Pending(record, tuple(Path(d) for d in sync_dirs), claim)

    def _commit(self, group: list[tuple[socket.socket, Pending]]) -> None:
        started = time.perf_counter()
        self.index.commit_group([pending for _, pending in group])
        self.busy_seconds += time.perf_counter() - started
        self.groups += 1
        self.rows += len(group)
        for connection, pending in group:
            try:
                connection.sendall(_answer(pending))
            except OSError:  # the association's worker died waiting: it acknowledged nothing
                pass


def _answer(pending: Pending) -> bytes:
    try:
        return pickle.dumps((pending.result, pending.error))
    except Exception:  # an exception that does not pickle still fails the store, with its text
        return pickle.dumps((None, RuntimeError(repr(pending.error))))


class CommitterClient:
    """A worker's side: Index.add through the supervisor's committer, one connection per association thread."""

    def __init__(self, address: str):
        self.address = address
        self._local = threading.local()
        self._all: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, record: InstanceRecord, sync_dirs: tuple, claim: int) -> str | None:
        """Commit one row; return the path of a file it replaced. Raises what the commit raised."""
        connection = self._connection()
        try:
            connection.sendall(pickle.dumps((record, tuple(str(d) for d in sync_dirs), claim)))
            answer = connection.recv(MESSAGE_BYTES)
        except BaseException:  # an answer left unread would be taken for the next row's
            self._drop(connection)
            raise
        if not answer:
            self._drop(connection)
            raise CommitUnknown("the index committer closed the connection before answering")
        result, error = pickle.loads(answer)
        if error is not None:
            raise error
        return result

    def _connection(self) -> socket.socket:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            connection.connect(self.address)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        return connection

    def _drop(self, connection: socket.socket) -> None:
        self._local.connection = None
        with self._lock:
            self._all.remove(connection)
        connection.close()

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
