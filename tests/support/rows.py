"""What the database holds after a request: token families and audit events, in order."""

from __future__ import annotations

from collections.abc import Sequence

from flask import Flask
from sqlalchemy import select

from authserver.extensions import db
from authserver.storage.models import AuditEvent, TokenFamily


def families(app: Flask) -> Sequence[TokenFamily]:
    """Every token family, oldest first."""
    with app.app_context():
        return db.session.scalars(select(TokenFamily).order_by(TokenFamily.created_at)).all()


def events(app: Flask, name: str) -> Sequence[AuditEvent]:
    """The audit events named ``name``, in the order they were recorded."""
    with app.app_context():
        return db.session.scalars(select(AuditEvent).where(AuditEvent.event == name)
                                  .order_by(AuditEvent.id)).all()
