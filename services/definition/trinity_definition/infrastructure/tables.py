"""The definition service's tables (Alembic migrations create them from here)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from trinity_platform.db import platform_tables

metadata = MetaData()

_SEQ = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY = rowid on SQLite

definitions = Table(
    "definitions",
    metadata,
    # Creation order: "newest first" listings page on it.
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    # Optimistic concurrency token; also the draft's revision on the API.
    Column("revision", BigInteger, nullable=False),
    # NULL while a draft; NULLs are distinct, so only assigned versions must be unique.
    Column("major", Integer, nullable=True),
    Column("minor", Integer, nullable=True),
    # The spec as the deterministic encoding of trinity.process.definition.v1.ProcessSpec.
    Column("spec", LargeBinary, nullable=False),
    Column("created_by", String(255), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("archived_at", DateTime(timezone=True), nullable=True),
    # Two concurrent publishes of one name cannot take the same version.
    UniqueConstraint("id", name="uq_definitions_id"),
    UniqueConstraint("name", "major", "minor", name="uq_definitions_name_version"),
    Index("ix_definitions_status_seq", "status", "seq"),
    Index("ix_definitions_name_seq", "name", "seq"),
)

PLATFORM = platform_tables(metadata)
