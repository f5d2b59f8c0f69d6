"""clients.web_origins and clients.refresh_token_delivery (browser apps)

A browser app registers the origins its code runs on (CORS answers only those) and may take
its refresh token in an HttpOnly cookie instead of the JSON body.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('web_origins', sa.JSON(), nullable=False,
                                      server_default='[]'))
        batch_op.add_column(sa.Column('refresh_token_delivery', sa.String(length=8),
                                      nullable=False, server_default='body'))


def downgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('refresh_token_delivery')
        batch_op.drop_column('web_origins')
