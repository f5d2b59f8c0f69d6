"""token status lists and back-channel logout

Each family (and each client, for its client_credentials tokens) gets an entry in a Token
Status List that its access tokens point to; clients may register a Back-Channel Logout URI,
and logout tokens wait in a durable outbox until delivered.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'status_lists',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('allocated', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_status_lists')),
    )
    op.create_table(
        'token_statuses',
        sa.Column('list_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('idx', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('status', sa.Integer(), nullable=False),
        sa.Column('owner_kind', sa.String(length=8), nullable=False),
        sa.Column('owner_id', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('changed_at', sa.DateTime(), nullable=True),
        sa.Column('free_after', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['list_id'], ['status_lists.id'],
                                name=op.f('fk_token_statuses_list_id_status_lists')),
        sa.PrimaryKeyConstraint('list_id', 'idx', name=op.f('pk_token_statuses')),
    )
    op.create_index('ix_token_statuses_list_status', 'token_statuses', ['list_id', 'status'])
    op.create_table(
        'logout_outbox',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('uri', sa.Text(), nullable=False),
        sa.Column('subject', sa.String(length=64), nullable=True),
        sa.Column('sid', sa.String(length=43), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
        sa.Column('locked_until', sa.DateTime(), nullable=True),
        sa.Column('locked_by', sa.String(length=64), nullable=True),
        sa.Column('delivered_at', sa.DateTime(), nullable=True),
        sa.Column('failed_at', sa.DateTime(), nullable=True),
        sa.Column('last_error', sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_logout_outbox')),
    )
    op.create_index(op.f('ix_logout_outbox_client_id'), 'logout_outbox', ['client_id'])
    op.create_index('ix_logout_outbox_pending', 'logout_outbox',
                    ['delivered_at', 'failed_at', 'next_attempt_at'])
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_list', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('status_idx', sa.Integer(), nullable=True))
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('backchannel_logout_uri', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('backchannel_logout_session_required', sa.Boolean(),
                                      server_default='0', nullable=False))
        batch_op.add_column(sa.Column('status_list', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('status_idx', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('status_idx')
        batch_op.drop_column('status_list')
        batch_op.drop_column('backchannel_logout_session_required')
        batch_op.drop_column('backchannel_logout_uri')
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.drop_column('status_idx')
        batch_op.drop_column('status_list')
    op.drop_index('ix_logout_outbox_pending', table_name='logout_outbox')
    op.drop_index(op.f('ix_logout_outbox_client_id'), table_name='logout_outbox')
    op.drop_table('logout_outbox')
    op.drop_index('ix_token_statuses_list_status', table_name='token_statuses')
    op.drop_table('token_statuses')
    op.drop_table('status_lists')
