"""The memory budget every command honours, and where DuckDB spills when a query needs more.

One setting, ``EGRESSLENS_MEMORY_LIMIT``: the most memory (resident set) one EgressLens process may
use, by default 2 GiB, the limit of the nightly CronJob in ``deploy/kubernetes``. It takes ``2GiB``,
``1536MiB``, ``2GB``, Kubernetes' ``2Gi`` or a number of bytes (what the Downward API's
``limits.memory`` gives), so a pod can pass its own limit in. From it:

- DuckDB's ``memory_limit`` is :data:`DUCKDB_SHARE` of the budget. The rest is for what DuckDB does not
  count (the Python interpreter and its libraries, about 250 MiB; Arrow and Polars frames of results;
  DuckDB's own allocations outside its buffer pool) and is what the analyses are written to stay
  within: they aggregate in SQL, fetch only top-N rows of anything that grows with the number of
  names, sources or destinations, and let DuckDB spill the rest.
- DuckDB spills to ``EGRESSLENS_TEMP_DIR`` when set, else to ``.<store>.tmp`` beside the store (a
  read-only analysis spills too). In a container, point it at a volume with room: what does not fit in
  memory goes there (at most a few times the store's size).

Every other module reads the budget from here (:func:`current`), ingest included, so "how much memory
may this take" has one answer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MEMORY_ENV = "EGRESSLENS_MEMORY_LIMIT"
TEMP_ENV = "EGRESSLENS_TEMP_DIR"
DEFAULT_BYTES = 2 * 1024**3  # the CronJob's limit (deploy/kubernetes/egresslens-nightly.yaml)
DUCKDB_SHARE = 0.5
MIN_BYTES = 256 * 1024**2  # below this the interpreter and its libraries alone do not fit

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2,
          "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.I)


class BudgetError(ValueError):
    """A budget setting that cannot be read (a usage error)."""


def parse_size(text: str) -> int:
    """`2GiB`, `1536MiB`, `2GB`, `2Gi`, `2147483648` -> bytes. BudgetError for anything else."""
    m = _SIZE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise BudgetError(f"{MEMORY_ENV} must be a size like 2GiB, 1536MiB, 2Gi or a number of bytes, not {text!r}")
    value = float(m.group(1)) * _UNITS[unit]
    if not MIN_BYTES <= value <= 1024**5:
        raise BudgetError(f"{MEMORY_ENV}={text} is outside 256MiB..1PiB: EgressLens needs at least 256 MiB")
    return int(value)


def describe(n: int) -> str:
    """Bytes as the budget is written: `2GiB`, `1.5GiB`, `768MiB`."""
    if n >= 1024**3:
        return f"{n / 1024**3:.3g}GiB"
    return f"{n / 1024**2:.4g}MiB"


@dataclass(frozen=True)
class Budget:
    total: int  # bytes the whole process may use
    temp_dir: Path | None  # EGRESSLENS_TEMP_DIR, or None: beside the store

    @property
    def duckdb(self) -> int:
        """DuckDB's memory_limit, in bytes."""
        return int(self.total * DUCKDB_SHARE)

    def duckdb_limit(self) -> str:
        """DuckDB's memory_limit as its setting takes it (whole MiB)."""
        return f"{self.duckdb // 1024**2}MiB"

    def spill_dir(self, db_path: Path | None) -> Path | None:
        """Where DuckDB spills for the store at `db_path` (None: in-memory store without a setting)."""
        if self.temp_dir is not None:
            return self.temp_dir
        if db_path is None:
            return None
        return db_path.parent.resolve() / f".{db_path.name}.tmp"

    def describe(self) -> str:
        return f"{MEMORY_ENV}={describe(self.total)}"


def current() -> Budget:
    """The budget of this process (read from the environment each time: tests and notebooks change it)."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    total = parse_size(raw) if raw else DEFAULT_BYTES
    temp = os.environ.get(TEMP_ENV, "").strip()
    return Budget(total, Path(temp) if temp else None)


def configure_duckdb(con, db_path: Path | None) -> Budget:  # noqa: ANN001 - a DuckDB connection
    """Set the connection's memory_limit and temp_directory from the budget; returns it."""
    b = current()
    con.execute(f"SET memory_limit = '{b.duckdb_limit()}'")
    spill = b.spill_dir(db_path)
    if spill is not None:
        try:  # DuckDB makes the directory itself when it first spills, but not its parents
            spill.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # a read-only place: only a query that must spill fails, and says where
        con.execute("SET temp_directory = ?", [str(spill)])
    return b
