"""The local DuckDB store: opening it (and saying who holds it when it is locked), creating the
canonical schema, and the sandboxed read-only connection behind `egresslens sql`."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import duckdb

from egresslens import budget
from egresslens.schema import ALL_TABLES, EVENT_TABLES, create_table_sql

DEFAULT_DB = "egresslens.duckdb"
DB_ENV = "EGRESSLENS_DB"


def resolve_db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """`--db` wins, then `EGRESSLENS_DB`, then `./egresslens.duckdb`."""
    return Path(db or os.environ.get(DB_ENV) or DEFAULT_DB)


def _configure(con: duckdb.DuckDBPyConnection, db_path: Path | None) -> None:
    con.execute("SET TimeZone = 'UTC'")
    try:  # commands draw their own progress, on stderr, when asked
        con.execute("SET enable_progress_bar = false")
    except duckdb.Error:  # in a notebook without ipywidgets DuckDB refuses to touch the setting at all
        pass
    # Bounded memory: DuckDB's share of the process's budget (egresslens.budget), spilling to disk
    # beside the store (or EGRESSLENS_TEMP_DIR) rather than holding a busy day in RAM; analyses of a
    # read-only store spill too.
    budget.configure_duckdb(con, db_path)
    con.execute("SET preserve_insertion_order = false")
    # Checkpoint less often than the 16 MB default: each batch commits tens of MB, and a checkpoint
    # per batch costs more than the batch's own work. A killed run still replays the WAL.
    con.execute("SET checkpoint_threshold = '256MB'")


class StoreBusy(RuntimeError):
    """Another process holds the store's lock (DuckDB allows one writer, or many readers, per file)."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"the store {path} is locked by {holder}; run again when it has finished "
                         "(`egresslens ingest ... --wait SECONDS` waits for it)")


_LOCK_HELD = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


def process_kind(argv: list[str]) -> str:
    """What kind of process a command line is, in a few words: an EgressLens command (with its
    subcommand), the duckdb client, a notebook kernel, some other Python process, or a named program."""
    for i, arg in enumerate(argv):
        if Path(arg).name == "egresslens" or (arg == "-m" and i + 1 < len(argv) and argv[i + 1].startswith("egresslens")):
            words = [w for w in argv[i + (2 if arg == "-m" else 1):] if not w.startswith("-")]
            words = words[:2] if words[:1] == ["ingest"] else words[:1]
            return f"an `{' '.join(['egresslens', *words])}` run"
    program = Path(argv[0]).name if argv else ""
    if program.startswith("duckdb"):
        return "the duckdb command-line client"
    if any("ipykernel" in a or Path(a).name.startswith("jupyter") for a in argv):
        return "a Jupyter notebook kernel"
    if program.startswith("python"):
        return "a Python process such as a notebook or script"
    return f"the program {program or 'unknown'}"


def describe_process(pid: int, exe: str = "") -> str:
    """`process_kind` of a running process, with its PID (from /proc where there is one)."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:  # not Linux, or the process has gone
        argv = [exe] if exe else []
    return f"{process_kind(argv)} (PID {pid})"


def _busy(path: Path, exc: duckdb.Error) -> StoreBusy | None:
    text = str(exc)
    if "Could not set lock" not in text:
        return None
    m = _LOCK_HELD.search(text)
    return StoreBusy(path, describe_process(int(m["pid"]), m["exe"]) if m else "another process")


class StoreUnreadable(OSError):
    """The store path holds something DuckDB cannot open (not a database, a newer format, no access)."""


def _open(path: Path, read_only: bool, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config or {})
    except duckdb.Error as exc:
        busy = _busy(path, exc)
        if busy is not None:
            raise busy from None
        raise StoreUnreadable(f"cannot open the store {path}: {_first_line(exc)}") from None


def connect(db: str | os.PathLike[str] | None = None, *, read_only: bool = False,
            wait: float = 0) -> duckdb.DuckDBPyConnection:
    """Open (and on first use create) the store. When another process holds it, retry for `wait`
    seconds, then raise :class:`StoreBusy` naming the holder."""
    path = resolve_db_path(db)
    if read_only and not path.exists():
        raise FileNotFoundError(f"no EgressLens store at {path}: run `egresslens ingest` or `egresslens demo` first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(wait, 0)
    while True:
        try:
            con = _open(path, read_only)
            break
        except StoreBusy:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(0.5, left))
    try:
        _configure(con, path)
    except BaseException:
        con.close()
        raise
    if not read_only:
        ensure_schema(con)
    return con


# `egresslens sql` runs one read-only query: the statement kinds a query can be (DESCRIBE, SHOW,
# SUMMARIZE, WITH, FROM-first and VALUES all parse as SELECT).
QUERY_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "PRAGMA"})
_SANDBOX = {"enable_external_access": False, "autoload_known_extensions": False,
            "autoinstall_known_extensions": False, "allow_community_extensions": False}


class RefusedQuery(ValueError):
    """SQL that `egresslens sql` does not run: not one read-only query on the store."""


def connect_query(db: str | os.PathLike[str] | None = None) -> duckdb.DuckDBPyConnection:
    """The store read-only with no way out: no other file, no network, no extension, and a locked
    configuration so no statement can turn any of that back on."""
    path = resolve_db_path(db)
    if not path.exists():
        raise FileNotFoundError(f"no EgressLens store at {path}: run `egresslens ingest` or `egresslens demo` first")
    con = _open(path, True, _SANDBOX)
    _configure(con, None)
    con.execute("SET lock_configuration = true")
    return con


def run_query(con: duckdb.DuckDBPyConnection, text: str) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of exactly one read-only query; :class:`RefusedQuery` for anything else."""
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        raise RefusedQuery(_first_line(exc)) from None
    if len(statements) != 1:
        raise RefusedQuery(f"give exactly one statement, not {len(statements)}")
    kind = statements[0].type.name
    if kind not in QUERY_STATEMENTS:
        raise RefusedQuery(f"{kind} statements are refused: `egresslens sql` runs one read-only query "
                           "(use the duckdb client on a copy of the store for anything else)")
    try:
        cur = con.execute(text)
        names = [d[0] for d in cur.description or []]
        return names, cur.fetchall() if names else []
    except duckdb.PermissionException as exc:
        raise RefusedQuery(f"refused: `egresslens sql` reads only the store, never another file, the network "
                           f"or an extension ({_first_line(exc)})") from None
    except duckdb.Error as exc:
        raise RefusedQuery(_first_line(exc)) from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction after a failure, and only that: when the failure was the COMMIT
    itself (a full disk), DuckDB has already rolled back, and the "no transaction is active" a second
    ROLLBACK raises would hide the failure that matters."""
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    for table in ALL_TABLES:
        con.execute(create_table_sql(table))
    _migrate(con)


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a store written by an earlier version to the current schema. Event ids were the MD5's hex
    text; they are now the digest as a UUID (`md5_number`, whose bytes are the hex text's in reverse order):
    the same digest, so events stored before and after are still one event."""
    old = [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND column_name = 'event_id' AND data_type = 'VARCHAR'").fetchall() if t in {e.name for e in EVENT_TABLES}]
    for table in old:
        reversed_hex = " || ".join(f"substr(event_id, {i}, 2)" for i in range(31, 0, -2))
        con.execute(f"ALTER TABLE {table} ALTER COLUMN event_id SET DATA TYPE UUID USING ({reversed_hex})::UUID")


def connect_memory() -> duckdb.DuckDBPyConnection:
    """An in-memory store with the canonical schema, for tests and notebooks."""
    con = duckdb.connect()
    _configure(con, None)
    ensure_schema(con)
    return con
