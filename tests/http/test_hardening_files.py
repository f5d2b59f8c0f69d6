"""The SQLite database holds every digest and the audit trail: its file, write-ahead log,
shared memory and writer lock are the owner's alone (0600), in a directory made 0700;
files a previous version left readable by others are tightened (docs/operators.md,
"Production hardening")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from authserver.app import create_app
from authserver.extensions import db
from authserver.storage import engine as storage_engine
from tests.support.databases import app_settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_once(url: str, keys_dir: Path) -> None:
    app = create_app(app_settings(url, keys_dir))
    try:
        with app.app_context():
            with db.engine.begin() as connection:  # a write: WAL, shm and the writer lock
                connection.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
                connection.execute(text("INSERT INTO probe VALUES (1)"))
            with db.engine.connect() as connection:
                assert connection.execute(text("SELECT count(*) FROM probe")).scalar()
    finally:
        with app.app_context():
            db.engine.dispose()


def test_a_new_database_and_its_directory_are_private(tmp_path, keys_dir):
    previous = os.umask(0o022)  # the usual one: files 0644 unless the server says otherwise
    try:
        database = tmp_path / "instance" / "authserver.sqlite3"
        _write_once(f"sqlite:///{database}", keys_dir)
        # Checked while a connection is open: SQLite removes the log files on the last close.
        app = create_app(app_settings(f"sqlite:///{database}", keys_dir))
        with app.app_context(), db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            assert _mode(database.parent) == 0o700
            for suffix in ("", "-wal", "-shm", "-writer.lock"):
                path = Path(f"{database}{suffix}")
                assert path.exists(), suffix
                assert _mode(path) == 0o600, (suffix, oct(_mode(path)))
        with app.app_context():
            db.engine.dispose()
    finally:
        os.umask(previous)


def test_files_left_readable_by_others_are_tightened(tmp_path, keys_dir):
    database = tmp_path / "old.sqlite3"
    _write_once(f"sqlite:///{database}", keys_dir)
    for suffix in storage_engine.SQLITE_FILE_SUFFIXES:
        path = Path(f"{database}{suffix}")
        if path.exists():
            path.chmod(0o644)
    storage_engine.private_files(str(database))
    assert _mode(database) == 0o600
    assert _mode(Path(f"{database}-writer.lock")) == 0o600
