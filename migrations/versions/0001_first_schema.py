"""First schema: projects, segments, assets, renders, takes, finetune jobs.

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 05:57:57.628822
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('assets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('ext', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('original_name', sa.String(length=255), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('media', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assets')),
    sa.UniqueConstraint('sha256', name=op.f('uq_assets_sha256'))
    )
    op.create_table('finetune_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('output_lora_path', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_finetune_jobs'))
    )
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('start_image_id', sa.Integer(), nullable=True),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('clip_overrides', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['start_image_id'], ['assets.id'], name=op.f('fk_projects_start_image_id_assets'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('name', name=op.f('uq_projects_name'))
    )
    op.create_table('renders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('model_id', sa.String(length=200), nullable=False),
    sa.Column('clip_count', sa.Integer(), nullable=False),
    sa.Column('start_at', sa.Integer(), nullable=False),
    sa.Column('clips_done', sa.Integer(), nullable=False),
    sa.Column('output_asset_id', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['output_asset_id'], ['assets.id'], name=op.f('fk_renders_output_asset_id_assets'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_renders_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_renders'))
    )
    with op.batch_alter_table('renders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_renders_project_id'), ['project_id'], unique=False)

    op.create_table('segments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('end', sa.Float(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('negative', sa.Text(), nullable=True),
    sa.Column('cfg', sa.Float(), nullable=True),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('asset_id', sa.Integer(), nullable=True),
    sa.Column('offset', sa.Float(), nullable=False),
    sa.Column('speed', sa.Float(), nullable=False),
    sa.CheckConstraint("kind IN ('prompt', 'audio', 'pose')", name=op.f('ck_segments_kind')),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_segments_asset_id_assets'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_segments_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segments'))
    )
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_segments_asset_id'), ['asset_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_segments_project_id'), ['project_id'], unique=False)

    op.create_table('takes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('render_id', sa.Integer(), nullable=True),
    sa.Column('clip_index', sa.Integer(), nullable=False),
    sa.Column('input_hash', sa.String(length=64), nullable=False),
    sa.Column('carry_hash', sa.String(length=64), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('frames_asset_id', sa.Integer(), nullable=False),
    sa.Column('carry_asset_id', sa.Integer(), nullable=False),
    sa.Column('timings', sa.JSON(), nullable=False),
    sa.Column('chosen', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('clip_index >= 0', name=op.f('ck_takes_clip_index')),
    sa.ForeignKeyConstraint(['carry_asset_id'], ['assets.id'], name=op.f('fk_takes_carry_asset_id_assets'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['frames_asset_id'], ['assets.id'], name=op.f('fk_takes_frames_asset_id_assets'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_takes_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['render_id'], ['renders.id'], name=op.f('fk_takes_render_id_renders'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_takes'))
    )
    with op.batch_alter_table('takes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_takes_carry_asset_id'), ['carry_asset_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_takes_frames_asset_id'), ['frames_asset_id'], unique=False)
        batch_op.create_index('ix_takes_project_clip', ['project_id', 'clip_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_takes_render_id'), ['render_id'], unique=False)
        batch_op.create_index('uq_takes_chosen_per_clip', ['project_id', 'clip_index'], unique=True, sqlite_where=sa.text('chosen'), postgresql_where=sa.text('chosen'))



def downgrade() -> None:
    with op.batch_alter_table('takes', schema=None) as batch_op:
        batch_op.drop_index('uq_takes_chosen_per_clip', sqlite_where=sa.text('chosen'), postgresql_where=sa.text('chosen'))
        batch_op.drop_index(batch_op.f('ix_takes_render_id'))
        batch_op.drop_index('ix_takes_project_clip')
        batch_op.drop_index(batch_op.f('ix_takes_frames_asset_id'))
        batch_op.drop_index(batch_op.f('ix_takes_carry_asset_id'))

    op.drop_table('takes')
    with op.batch_alter_table('segments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_segments_project_id'))
        batch_op.drop_index(batch_op.f('ix_segments_asset_id'))

    op.drop_table('segments')
    with op.batch_alter_table('renders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_renders_project_id'))

    op.drop_table('renders')
    op.drop_table('projects')
    op.drop_table('finetune_jobs')
    op.drop_table('assets')
