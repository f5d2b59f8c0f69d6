"""A racer in its own process: its own app, engine and connections (multiprocessing, spawn).

Kept apart from the test module so that a spawned child imports only this and the app.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import text

from authserver.app import create_app
from authserver.config import Settings
from authserver.extensions import db


def refresh_in_own_process(settings: Settings, forms: list[dict[str, str]], start: Any,
                           results: Any) -> None:
    """Connect; then for each form: wait at the start line with the other processes,
    refresh once. Report ``(pid, [(status, body), ...])``."""
    outcomes: list[tuple[int, str]] = []
    try:
        app = create_app(settings=settings)
        app.config["TESTING"] = True
        client = app.test_client()
        with app.app_context():
            db.session.execute(text("SELECT 1"))  # connected before the start line
            db.session.remove()
            app.extensions["authserver"].keys.active()  # keys parsed before it, too
        for form in forms:
            start.wait(timeout=120)
            response = client.post("/oauth/token", data=form)
            outcomes.append((response.status_code, response.get_data(as_text=True)))
        with app.app_context():
            db.engine.dispose()
    except BaseException as exc:  # report, never leave the parent waiting
        outcomes.append((-1, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        results.put((os.getpid(), outcomes))
