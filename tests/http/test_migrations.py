"""Migrations are the only source of schema: upgrading to head matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from authserver.extensions import db
from authserver.storage.base import Base


def test_models_and_migrations_do_not_drift(app, backend):
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations differ on {backend}: {diff}"


def test_downgrade_and_upgrade_again(tmp_path, keys_dir):
    import flask_migrate

    from authserver.app import create_app
    from tests.support.databases import app_settings

    app = create_app(app_settings(f"sqlite:///{tmp_path / 'm.sqlite3'}", keys_dir))
    with app.app_context():
        flask_migrate.upgrade(revision="heads")
        flask_migrate.downgrade(revision="base")
        flask_migrate.upgrade(revision="heads")
        with db.engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_heads()
        db.engine.dispose()
