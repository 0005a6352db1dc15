"""Files replaced whole: every file EgressLens writes goes through here.

- :func:`write_text` writes to a temporary file in the same directory (``.<name>.<random>.tmp``),
  flushes and fsyncs it, and renames it over the target: a reader, a kill or a full disk at any moment
  sees either the previous file whole or the new one whole, never a truncated one. On failure the
  temporary file is removed and the error raised (a full disk is exit 8).
- :func:`publish` makes several files (the nightly job's ``latest.html`` and ``latest.json``) change
  together: they are symbolic links through one directory link (``.latest/current``) that is switched
  with a single rename, so the pair always comes from one run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

LATEST_DIR = ".latest"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace `path` with `data` atomically (see the module docstring); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # the failure names the file the user asked for
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Replace `path` with `text` atomically; returns the path."""
    return write_bytes(path, text.encode(encoding))


def _link(target: str, at: Path) -> None:
    """Make `at` a symbolic link to `target`, replacing whatever is there in one rename."""
    tmp = at.with_name(f".{at.name}.{os.getpid()}.link")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, at)


def clear_leftovers(*directories: str | os.PathLike[str]) -> None:
    """Remove what a killed writer left in `directories` (and their ``.latest``): temporary files and
    links. Only for a caller that holds the lock of those directories."""
    for d in directories:
        for sub in (Path(d), Path(d) / LATEST_DIR):
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                if p.name.startswith(".") and p.name.endswith((".tmp", ".link")):
                    try:
                        p.unlink()
                    except OSError:
                        pass


def publish(directory: str | os.PathLike[str], files: Mapping[str, Path], generation: str) -> list[Path]:
    """Make `directory/<name>` show `files[name]` for every name, all switching at one instant.

    The files are hard-linked (copied where links are impossible) into ``.latest/<generation>/``, the
    link ``.latest/current`` is switched to it with one rename, and each ``<name>`` is a link to
    ``.latest/current/<name>`` (made once). Older generations are removed afterwards."""
    directory = Path(directory)
    root = directory / LATEST_DIR
    gen = root / generation
    gen.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        dst = gen / name
        if dst.exists():
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError:
            write_bytes(dst, Path(src).read_bytes())
    _fsync_dir(gen)
    _link(generation, root / "current")
    _fsync_dir(root)
    out = []
    for name in files:
        at = directory / name
        want = os.path.join(LATEST_DIR, "current", name)
        if not (at.is_symlink() and os.readlink(at) == want):
            _link(want, at)
        out.append(at)
    _fsync_dir(directory)
    for old in root.iterdir():
        if old.name not in (generation, "current") and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    return out
