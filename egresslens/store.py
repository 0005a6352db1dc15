"""The local DuckDB store: opening it, creating the canonical schema, read-only access for SQL."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from egresslens.schema import ALL_TABLES, create_table_sql

DEFAULT_DB = "egresslens.duckdb"
DB_ENV = "EGRESSLENS_DB"
MEMORY_LIMIT_ENV = "EGRESSLENS_MEMORY_LIMIT"


def resolve_db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """`--db` wins, then `EGRESSLENS_DB`, then `./egresslens.duckdb`."""
    return Path(db or os.environ.get(DB_ENV) or DEFAULT_DB)


def _configure(con: duckdb.DuckDBPyConnection, db_path: Path | None) -> None:
    con.execute("SET TimeZone = 'UTC'")
    # Bounded memory: spill to disk beside the store rather than hold a busy day in RAM.
    con.execute(f"SET memory_limit = '{_memory_limit()}'")
    if db_path is not None:
        spill = db_path.parent.resolve() / f".{db_path.name}.tmp"
        con.execute("SET temp_directory = ?", [str(spill)])
    con.execute("SET preserve_insertion_order = false")
    # Checkpoint less often than the 16 MB default: each batch commits tens of MB, and a checkpoint
    # per batch costs more than the batch's own work. A killed run still replays the WAL.
    con.execute("SET checkpoint_threshold = '256MB'")


def _memory_limit() -> str:
    value = os.environ.get(MEMORY_LIMIT_ENV, "4GB").strip()
    if not value or not all(ch.isalnum() or ch == "." for ch in value):
        raise ValueError(f"{MEMORY_LIMIT_ENV} must look like 4GB or 512MB, got {value!r}")
    return value


def connect(db: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and on first use create) the store."""
    path = resolve_db_path(db)
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"no EgressLens store at {path}: run `egresslens ingest` or `egresslens demo` first")
        con = duckdb.connect(str(path), read_only=True)
        _configure(con, None)
        return con
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    _configure(con, path)
    ensure_schema(con)
    return con


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    for table in ALL_TABLES:
        con.execute(create_table_sql(table))


def connect_memory() -> duckdb.DuckDBPyConnection:
    """An in-memory store with the canonical schema, for tests and notebooks."""
    con = duckdb.connect()
    _configure(con, None)
    ensure_schema(con)
    return con
