"""What went wrong, as one sentence and its exit code: the one place a failure is classified.

Every command runs inside :func:`egresslens.cliutil.guarded`, which turns any exception that reaches
it into ``error: <one sentence>`` on stderr and the code :func:`classify` gives; the nightly job and
the ingest runs store the same sentence as their message. Nothing prints a traceback unless
``EGRESSLENS_DEBUG=1`` asks for it, and no failure ever exits 1, the "findings" code.
"""

from __future__ import annotations

import errno
import os

from egresslens import exitcodes

DEBUG_ENV = "EGRESSLENS_DEBUG"

# OSError numbers that mean "the disk (or the file system) could not take the write"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CANNOT_WRITE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR, errno.EISDIR}
_DUCKDB_DISK_FULL = ("No space left on device", "Disk quota exceeded", "File too large", "max_temp_directory_size",
                     "not enough space")


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen, e = [], set(), exc
    while e is not None and id(e) not in seen and len(out) < 8:
        seen.add(id(e))
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _disk_full_text(text: str) -> bool:
    return any(w.lower() in text.lower() for w in _DUCKDB_DISK_FULL)


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one sentence) for an exception that ended a command."""
    import duckdb

    from egresslens import budget
    from egresslens.store import StoreBusy, StoreUnreadable

    if isinstance(exc, KeyboardInterrupt):
        return exitcodes.INTERRUPTED, "interrupted, the next run resumes"
    chain = _chain(exc)
    # a disk that filled up anywhere in the chain wins: what followed it (a failed rollback) is its echo
    for e in chain:
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            where = f" writing {e.filename}" if e.filename else ""
            return exitcodes.IO_ERROR, f"no space left on the device{where}: free some space (or move the store, " \
                                       "EGRESSLENS_TEMP_DIR or the output elsewhere) and run again"
        if isinstance(e, duckdb.Error) and _disk_full_text(str(e)):
            return exitcodes.IO_ERROR, ("no space left on the device of the store or its temporary directory "
                                        f"({_first_line(e)}): free some space (or set EGRESSLENS_TEMP_DIR to a "
                                        "larger volume) and run again")
    if isinstance(exc, StoreBusy):
        return exitcodes.BUSY, str(exc)
    if isinstance(exc, StoreUnreadable):
        return exitcodes.INPUT_ERROR, str(exc)
    if isinstance(exc, budget.BudgetError):
        return exitcodes.USAGE, str(exc)
    if isinstance(exc, (MemoryError, duckdb.OutOfMemoryException)):
        try:
            setting = budget.current().describe()
        except budget.BudgetError:
            setting = budget.MEMORY_ENV
        return exitcodes.OUT_OF_MEMORY, (f"the memory budget ({setting}) was not enough: {_first_line(exc)}; "
                                         f"raise {budget.MEMORY_ENV}, or analyse a shorter window")
    if isinstance(exc, FileNotFoundError):
        return exitcodes.INPUT_ERROR, f"not found: {exc.filename or _first_line(exc)}"
    if isinstance(exc, OSError) and (exc.errno in _CANNOT_WRITE or exc.errno is None):
        where = f" {exc.filename}" if exc.filename else ""
        return exitcodes.IO_ERROR, f"cannot read or write{where}: {exc.strerror or _first_line(exc)}"
    if isinstance(exc, OSError):
        return exitcodes.IO_ERROR, f"input/output error: {_first_line(exc)}"
    if isinstance(exc, duckdb.IOException):
        return exitcodes.IO_ERROR, f"the store could not be read or written: {_first_line(exc)}"
    if isinstance(exc, RecursionError):
        return exitcodes.INPUT_ERROR, "the input is nested too deeply to read"
    return exitcodes.INTERNAL, (f"internal error ({type(exc).__name__}: {_first_line(exc)[:300]}); please report it "
                                f"with the command line (set {DEBUG_ENV}=1 for the traceback)")


def sentence(exc: BaseException) -> str:
    """The one sentence of :func:`classify`, redacted, for messages that are stored (ingest runs)."""
    from egresslens.redact import text

    return text(classify(exc)[1])
