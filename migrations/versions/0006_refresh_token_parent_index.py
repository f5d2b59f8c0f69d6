"""index refresh_tokens.parent_id (purge)

Deleting a refresh token sets its child's ``parent_id`` to NULL (ON DELETE SET NULL);
without an index on ``parent_id`` every deleted row costs a scan of the whole table, so
``authserver db purge`` would be quadratic in the number of tokens it deletes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refresh_tokens_parent_id'), ['parent_id'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refresh_tokens_parent_id'))
