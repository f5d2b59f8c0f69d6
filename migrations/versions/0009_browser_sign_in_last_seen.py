"""login_sessions.last_seen_at (browser sign-ins expire when idle)

A browser sign-in ends after an idle and an absolute lifetime (browser_session_idle_ttl,
browser_session_max_ttl). The last time it was used is recorded, at most once a minute;
NULL means never since it was made (created_at). Additive: a running older version
ignores the column.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('login_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_seen_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('login_sessions', schema=None) as batch_op:
        batch_op.drop_column('last_seen_at')
