"""ORM models of the catalog. Any change here needs an Alembic migration (a test checks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Model(Base):
    """One model content: the same bytes (or tensors) wherever and however they are stored."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # content_id when tensors could be read, else sha256, else "path:<location>" for error rows.
    content_key: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(500), index=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    autov1: Mapped[str | None] = mapped_column(String(16))
    autov2: Mapped[str | None] = mapped_column(String(16), index=True)
    autov3: Mapped[str | None] = mapped_column(String(64))
    blake3: Mapped[str | None] = mapped_column(String(64))
    crc32: Mapped[str | None] = mapped_column(String(8))
    content_id: Mapped[str | None] = mapped_column(String(64), index=True)
    format: Mapped[str] = mapped_column(String(40))
    family: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    variant: Mapped[str | None] = mapped_column(String(80))
    prediction_type: Mapped[str | None] = mapped_column(String(40))
    precision: Mapped[str | None] = mapped_column(String(40))
    parameter_count: Mapped[int | None] = mapped_column(BigInteger)
    weight_bytes: Mapped[int | None] = mapped_column(BigInteger)
    tensor_count: Mapped[int | None] = mapped_column(Integer)
    confidence: Mapped[float | None] = mapped_column(Float)
    # The worst audit of its locations on disk (``locations.audit_status``): one unsafe copy
    # makes the model unsafe. Kept up to date by every scan; readers may recompute it
    # (``queries.model_audit``).
    audit_status: Mapped[str | None] = mapped_column(String(20), index=True)
    # Full inspect/audit records (evidence, candidates, findings, vram, facts) as JSON.
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # User corrections (family, kind, variant, ...) that survive re-scans.
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    # By path, on every database: rows come back in no fixed order otherwise (PostgreSQL moves
    # an updated row; a parallel scan records copies in the order its workers finish), which
    # made `show`'s paths and the copy picked first change between scans.
    locations: Mapped[list[Location]] = relationship(
        back_populates="model", order_by="Location.path"
    )


class Location(Base):
    """One place on disk where a model is (or was) stored."""

    __tablename__ = "locations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL"), index=True
    )
    path: Mapped[str] = mapped_column(String(4096), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    # st_ctime_ns: changes with chmod and with any write, even one that restores the mtime.
    ctime_ns: Mapped[int | None] = mapped_column(BigInteger)
    inode: Mapped[int | None] = mapped_column(BigInteger)
    device: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), index=True)  # present | missing | error
    # This file's own audit (safe | unsafe | error): a .ckpt and the .safetensors holding the
    # same tensors are one model, but only one of them may run code. NULL: not audited yet
    # (a catalog from before 0004 that could not tell), so the next scan reads it again.
    audit_status: Mapped[str | None] = mapped_column(String(20), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Where the location came from (e.g. {"hf_repo": ..., "hf_revision": ...}), folder facts,
    # this copy's format, hashes and audit verdict ("audit": status, format, findings).
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model | None] = relationship(back_populates="locations")


class Scan(Base):
    """One run of ``modelsafe scan``: what it looked at and what it found."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    roots: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20))  # running | finished | failed
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Output(Base):
    """One generated image and the full recipe that made it."""

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(4096))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL"), index=True
    )
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """One generation job: its spec, where it stands, who runs it and what it made.

    A worker claims a job with a guarded UPDATE (queued, or running with an expired lease ->
    running for it, ``attempts`` + 1); ``attempts`` is the fencing token every later write checks.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    status: Mapped[str] = mapped_column(String(20), index=True)  # queued|running|done|failed
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    queue: Mapped[str | None] = mapped_column(String(80))  # the capacity tier it was routed to
    vram_need: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    output_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    worker: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
