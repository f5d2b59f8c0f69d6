"""Engine set-up per backend: SQLite pragmas, its one-writer lock, PostgreSQL timeouts.

Transactions (docs/design.md, "Storage"):

- Every ORM transaction on SQLite starts with ``BEGIN IMMEDIATE`` (it takes SQLite's write
  lock at once, so a read-then-write transaction never fails half-way with
  SQLITE_BUSY_SNAPSHOT). Before that it takes the *writer lock*: a thread lock plus an
  ``flock`` on a file beside the database, so writers of all server processes queue in
  the kernel and are woken the moment the lock is free. SQLite's own busy handler sleeps
  1, 2, 5 ... 100 ms between polls, which under load left requests asleep for a second
  while the database sat idle.
- The token endpoint's hot path holds none of that while it signs: it reads in
  autocommit mode (:func:`autocommit`), and only then opens its short write transaction
  (``engine.begin()``), or on PostgreSQL sends one self-contained statement.
- On PostgreSQL every connection gets a ``lock_timeout`` and a ``statement_timeout``: a
  request never waits unboundedly on a row lock or a stalled statement; it fails (503)
  and the client retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)


def resolve_database_url(url: str) -> str:
    """Make a relative SQLite path absolute (relative to the working directory).

    Flask-SQLAlchemy would otherwise resolve it against the app's instance folder,
    which for an installed package is somewhere under the virtualenv.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if parsed.database == ":memory:":
        return url
    path = Path(parsed.database).expanduser().resolve()
    # The database holds every digest and the audit trail: a directory made for it is the
    # owner's alone (docs/design.md, "Operations"); one that exists is left as it is.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


# SQL parameters never reach a log line or an error message: with AUTHSERVER_LOG_LEVEL=DEBUG
# SQLAlchemy logs every statement, and a username lookup may carry a password typed into
# the username field (docs/design.md, "Secrets": nothing secret in a log line).
HIDE_PARAMETERS = True


def engine_options(url: str, pool_size: int, *, lock_timeout_ms: int = 0,
                   statement_timeout_ms: int = 0) -> dict[str, Any]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        options: dict[str, Any] = {"connect_args": {"check_same_thread": False},
                                   "hide_parameters": HIDE_PARAMETERS}
        if parsed.database and parsed.database != ":memory:":
            # A file database gets a QueuePool (5 + 10 by default): size it like
            # PostgreSQL's, so more threads than that do not queue for a connection.
            options.update(pool_size=pool_size, max_overflow=pool_size)
        return options
    # Set once per connection at connect time (no round trip per request).
    pg_options = f"-c lock_timeout={int(lock_timeout_ms)} " \
                 f"-c statement_timeout={int(statement_timeout_ms)}"
    # No pool_pre_ping: it costs a round trip on every checkout. A connection found dead
    # fails its statement instead; SQLAlchemy then recycles every pooled connection of that
    # age, and the request answers 503 (the client retries; nothing was half-done).
    return {"pool_size": pool_size, "max_overflow": pool_size,
            "hide_parameters": HIDE_PARAMETERS, "connect_args": {"options": pg_options}}


# -- transactions --------------------------------------------------------------------------

_max_lock_wait: dict[Engine, float] = {}


def max_lock_wait(engine: Engine) -> float:
    """Seconds a statement may wait on a row lock before it fails (PostgreSQL's
    ``lock_timeout``); 0 where writes take their lock before the clock is read (SQLite)."""
    return _max_lock_wait.get(engine, 0.0)


def install_postgres_limits(engine: Engine, lock_timeout_ms: int) -> None:
    if engine.dialect.name == "postgresql":
        _max_lock_wait[engine] = lock_timeout_ms / 1000

_BEGIN = "authserver_begin"  # execution option read by the SQLite begin hook


def autocommit(connection: Connection) -> Connection:
    """Each statement on ``connection`` commits by itself: no BEGIN or COMMIT round trips.

    For reads that need no snapshot across statements, and for single statements that are
    atomic on their own (the refresh claim on PostgreSQL).
    """
    if connection.dialect.name == "sqlite":
        return connection.execution_options(**{_BEGIN: None})
    return connection.execution_options(isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def sqlite_write(connection: Connection) -> Iterator[None]:
    """SQLite: one write transaction on a connection in :func:`autocommit` mode, driven on
    the driver connection: the writer lock, ``BEGIN IMMEDIATE`` ... ``COMMIT`` (or
    ``ROLLBACK`` on an exception). Code inside runs after every wait is over."""
    # pysqlite's connection (SQLAlchemy types the driver's connection as Any | None).
    driver = cast(sqlite3.Connection, connection.connection.driver_connection)
    lock = _writer_locks.get(connection.engine)
    with lock.held() if lock is not None else contextlib.nullcontext():
        try:
            driver.execute("BEGIN IMMEDIATE")
        except connection.dialect.loaded_dbapi.Error as exc:
            raise OperationalError("BEGIN IMMEDIATE", {}, exc) from exc
        try:
            yield
        except BaseException:
            driver.rollback()
            raise
        try:
            driver.commit()
        except connection.dialect.loaded_dbapi.Error as exc:
            driver.rollback()
            raise OperationalError("COMMIT", {}, exc) from exc


# -- SQLite --------------------------------------------------------------------------------


class WriterLock:
    """One writer at a time across every process using a SQLite file.

    A thread lock serialises this process's threads (an ``flock`` is per open file, so it
    would not); the ``flock`` on ``<database>-writer.lock`` serialises processes. Waiting
    for the ``flock`` polls without blocking, in steps of at most 1 ms, so a wait is
    bounded by ``timeout`` like SQLite's busy timeout. A process that dies holding the
    lock releases it with its file descriptor.
    """

    def __init__(self, database_path: str, timeout: float) -> None:
        self.path = database_path + "-writer.lock"
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=max(self.timeout, 0)):
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        try:
            fd = self._file()
            delay = 0.00005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise OperationalError("BEGIN IMMEDIATE", {},
                                               Exception("database is locked")) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.001)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


# SQLite gives the -wal, -shm and -journal files the database file's mode.
SQLITE_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal", "-writer.lock")


def private_files(database: str) -> None:
    """The SQLite database, its WAL, shared-memory and journal files and the writer lock
    are the owner's alone (0600; docs/design.md, "Operations"): the file is created so
    before SQLite's first connection would create it 0644, and existing ones readable by
    others are tightened. One that cannot be tightened (another owner) is left with a
    warning."""
    try:
        os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # no directory, or not writable: SQLite's first connection says so
    for suffix in SQLITE_FILE_SUFFIXES:
        path = database + suffix
        try:
            mode = os.stat(path).st_mode
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot make %s private (%s): other users may read it", path,
                        exc.strerror)


WAL_BACKSTOP_PAGES = 100_000  # ~400 MB: only if background checkpoints stop keeping up

_writer_locks: dict[Engine, WriterLock] = {}
_HOLDS_LOCK = "authserver_writer_lock_held"


def install_sqlite_hooks(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, a busy timeout, the writer lock and ``BEGIN IMMEDIATE``."""
    if engine.dialect.name != "sqlite":
        return
    database = engine.url.database
    lock = None
    if database and database != ":memory:" and not database.startswith("file:"):
        private_files(database)
    if database and database != ":memory:":
        lock = WriterLock(database, busy_timeout_ms / 1000)
        _writer_locks[engine] = lock

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # The token table grows by a row per refresh, and digests are random keys: without
        # a larger page cache (the default is 2 MB) and memory-mapped reads, every lookup
        # and insert of a big table costs page reads through system calls.
        cursor.execute("PRAGMA cache_size = -65536")  # KiB: 64 MiB per connection, at most
        cursor.execute("PRAGMA mmap_size = 1073741824")  # 1 GiB of address space, shared
        # Checkpoints run in the background (``WalCheckpointer``), not in the request whose
        # commit crosses SQLite's threshold (1,000 pages by default) while every other
        # writer waits for it: that cost SQLite refreshes a fifth of their throughput and
        # put 60 ms stalls into p99. The automatic one stays as a backstop, far above what
        # a second of writes adds.
        cursor.execute(f"PRAGMA wal_autocheckpoint = {WAL_BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN, "IMMEDIATE")
        if mode is None:
            return  # autocommit: each statement is its own transaction
        if mode != "IMMEDIATE" or lock is None:
            connection.exec_driver_sql(f"BEGIN {mode}")
            return
        lock.acquire()
        connection.info[_HOLDS_LOCK] = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _drop(connection.info)
            raise

    def _drop(info: dict[Any, Any]) -> None:
        if info.pop(_HOLDS_LOCK, False) and lock is not None:
            lock.release()

    # pysqlite's commit()/rollback() do nothing when no transaction is open, so ending the
    # transaction here lets the writer lock go the moment SQLite's lock goes.
    def _end(connection: Connection, how: str) -> None:
        if connection.info.get(_HOLDS_LOCK):
            try:
                getattr(connection.connection.dbapi_connection, how)()
            finally:
                _drop(connection.info)

    event.listen(engine, "commit", lambda connection: _end(connection, "commit"))
    event.listen(engine, "rollback", lambda connection: _end(connection, "rollback"))

    # A connection returned to the pool mid-transaction (an error path) or invalidated:
    # the writer lock must not outlive its transaction.
    @event.listens_for(engine, "reset")
    def _on_reset(_dbapi_connection: Any, record: Any, _state: Any) -> None:
        if record is not None:
            _drop(record.info)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(_dbapi_connection: Any, record: Any, _exception: Any) -> None:
        if record is not None:
            _drop(record.info)


class WalCheckpointer:
    """SQLite: copies the write-ahead log back into the database every ``interval`` seconds
    in a daemon thread of each serving process (``start``), so no request pays for it.

    First a PASSIVE checkpoint with no lock held: writers go on while it copies the second's
    pages (each page once, however many commits changed it). Then a second one holding the
    writer lock, which has only the last few frames to copy: with the whole log copied, the
    next writer starts the log file over instead of growing it. Of two processes
    checkpointing at once one finds the other busy and skips a turn.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._pid = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, engine: Engine) -> None:
        if engine.dialect.name != "sqlite" or engine not in _writer_locks:
            return  # PostgreSQL, or an in-memory database
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop.clear()
            self.thread = threading.Thread(target=self._run, args=(engine,), daemon=True,
                                           name="authserver-wal-checkpointer")
            self.thread.start()

    def stop(self) -> None:
        """Stop this process's thread and wait for its current checkpoint to finish."""
        self._stop.set()
        with self._lock:
            thread, self.thread, self._pid = self.thread, None, 0
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self, engine: Engine) -> None:
        while not self._stop.wait(self.interval):
            self.checkpoint(engine)

    @staticmethod
    def checkpoint(engine: Engine) -> tuple[int, int, int] | None:
        """Copy the whole log: (busy, frames in the log, frames copied) of the final
        checkpoint, or None if it failed (logged; the next tick tries again)."""
        try:
            with autocommit(engine.connect()) as connection:
                driver = cast(sqlite3.Connection, connection.connection.driver_connection)
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                with _writer_locks[engine].held():
                    row = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except (OperationalError, sqlite3.Error) as exc:
            log.warning("SQLite checkpoint failed (%s); the next one retries", exc)
            return None
        return int(row[0]), int(row[1]), int(row[2])
