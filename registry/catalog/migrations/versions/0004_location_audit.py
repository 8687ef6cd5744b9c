"""locations.audit_status (each file's own audit) and locations.ctime_ns

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 12:00:00.000000

A model (one content) can be stored as a safe .safetensors and as a .ckpt that runs code: the
audit belongs to each file. Existing rows are backfilled from their model's audit only where
the model has a single location (that audit was this file's). Where a model has several, the
old value was whichever file was scanned last, so it is left NULL: the next scan reads those
files again and records each one's own audit (until then readers fall back to the model's).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ctime_ns", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("audit_status", sa.String(length=20), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_locations_audit_status"), ["audit_status"], unique=False
        )
    op.execute(
        "UPDATE locations SET audit_status = ("
        " SELECT models.audit_status FROM models WHERE models.id = locations.model_id)"
        " WHERE model_id IN ("
        "  SELECT model_id FROM locations WHERE model_id IS NOT NULL"
        "  GROUP BY model_id HAVING COUNT(*) = 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_locations_audit_status"))
        batch_op.drop_column("audit_status")
        batch_op.drop_column("ctime_ns")
