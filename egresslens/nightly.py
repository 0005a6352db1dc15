"""The nightly job: incremental ingest, then the report, in one locked run.

    result = run_nightly(NightlyOptions(out_dir=Path("reports"), files=[Path("logs")]))

- One run at a time: an exclusive lock on ``OUT_DIR/.egresslens-nightly.lock`` (released by the
  kernel if the process dies); a second run stops at once with BUSY.
- Ingest is incremental: files and blobs already read are skipped, Log Analytics windows already
  done are not queried again.
- A failed ingest is never hidden: the report is still written, with a banner saying the ingest
  failed and a freshness section showing the last good ingest, and the run exits non-zero.
- Reports are kept dated, to the second (``reports/egresslens-YYYY-MM-DDTHHMMSSZ.html`` and ``.json``;
  a second run in the same second gets ``-2``), each written whole (:mod:`egresslens.atomic`), and
  published as ``latest.html`` / ``latest.json``, which switch to the new run together.
- Every failure has its own exit code and one sentence (:mod:`egresslens.errors`): a full disk under
  the store is 8, a store held by another process 6, whichever step it happens in.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from egresslens import atomic, errors, exitcodes

LOCK_NAME = ".egresslens-nightly.lock"
_DATED = re.compile(r"^egresslens-(\d{4}-\d{2}-\d{2}T\d{4}(?:\d{2})?Z)(?:-\d+)?\.")


class Busy(Exception):
    """Another nightly run holds the lock (or another process holds the store)."""


class IngestFailed(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class NightlyOptions:
    out_dir: Path
    db: str | None = None
    files: list[Path] = field(default_factory=list)
    workspace_id: str | None = None
    adx_cluster: str | None = None  # Azure Data Explorer / Fabric Eventhouse (with adx_database)
    adx_database: str | None = None
    adx_tables: dict[str, str] = field(default_factory=dict)  # Log Analytics name -> the database's table
    account_url: str | None = None
    containers: list[str] = field(default_factory=list)
    since: str = "24h"
    compare_to: str | None = "7d"
    policy: list | None = None  # rules from egresslens.recommend.load_policy
    estate: object | None = None  # egresslens.estate.Estate read from --policy exports
    firewall_ids: list[str] = field(default_factory=list)  # read from Azure each night (--firewall-id)
    policy_ids: list[str] = field(default_factory=list)  # (--policy-id)
    arm_endpoint: str = "https://management.azure.com"
    policy_source: str = ""
    fail_on: str = "finding"
    keep_days: int = 30
    shared_plotly: bool = True  # the reports load one plotly.js beside them instead of carrying 4.8 MB each


@dataclass
class NightlyResult:
    code: int
    written: list[Path]
    ingest: list[str]  # one line per ingest step
    error: str | None = None  # the failed ingest, if any


@contextmanager
def lock(out_dir: Path, db_path: Path | None = None) -> Iterator[Path]:
    """Hold the nightly lock of `out_dir` (and of the store at `db_path`, so two runs writing different
    output directories from one store do not overlap either) for the duration; Busy when another run
    holds one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / LOCK_NAME]
    if db_path is not None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        paths.append(db_path.parent / f".{db_path.name}.nightly.lock")
    fds: list[int] = []
    try:
        for path in paths:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                what = "its output directory" if path == paths[0] else f"the store {db_path}"
                raise Busy(f"another nightly run (pid {holder}) holds {what} ({path}): not starting a second one") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield paths[0]
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock


def ingest(con, opts: NightlyOptions, now: datetime) -> list[str]:  # noqa: ANN001
    """Every configured ingest step, each incremental. IngestFailed (with its exit code) on the first failure."""
    done: list[str] = []
    if opts.files:
        from egresslens.ingest import ingest_files

        try:
            counts, results, run_id = ingest_files(con, opts.files)
        except FileNotFoundError as exc:
            raise IngestFailed(exitcodes.INPUT_ERROR, f"ingest of files failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - reported in one sentence, the report still written
            code, why = errors.classify(exc)
            raise IngestFailed(code, f"ingest of files failed: {why}") from None
        unchanged = sum(r.skipped for r in results)
        done.append(f"files: run {run_id}, {len(results)} files ({unchanged} unchanged): {counts.summary()}")
    if opts.workspace_id:
        from azure.identity import DefaultAzureCredential

        from egresslens.analyse import parse_duration
        from egresslens import ingest as pipeline
        from egresslens.sources.loganalytics import LogAnalyticsError, LogAnalyticsSource, Target

        try:
            source = LogAnalyticsSource(DefaultAzureCredential(), Target(workspace_id=opts.workspace_id),
                                        start=now - parse_duration(opts.since), now=now)
            stats = source.summary(pipeline.run(con, source))
        except (LogAnalyticsError, ValueError) as exc:
            raise IngestFailed(exitcodes.REMOTE_ERROR, f"ingest from Log Analytics failed: {exc}") from None
        done.append(f"loganalytics: {stats.rows:,} rows in {stats.windows} windows "
                    f"({stats.windows_skipped} already done): {stats.counts.summary()}")
    if opts.adx_cluster:
        from azure.identity import DefaultAzureCredential

        from egresslens.analyse import parse_duration
        from egresslens import ingest as pipeline
        from egresslens.sources.adx import AdxError, AdxSource, AdxTarget

        try:
            source = AdxSource(DefaultAzureCredential(), AdxTarget(opts.adx_cluster, opts.adx_database or ""),
                               tables_map=opts.adx_tables, start=now - parse_duration(opts.since), now=now)
            stats = source.summary(pipeline.run(con, source))
        except (AdxError, ValueError) as exc:
            raise IngestFailed(exitcodes.REMOTE_ERROR, f"ingest from Azure Data Explorer failed: {exc}") from None
        done.append(f"adx: {stats.rows:,} rows in {stats.windows} windows "
                    f"({stats.windows_skipped} already done): {stats.counts.summary()}")
    if opts.account_url:
        from egresslens.analyse import parse_duration
        from egresslens import ingest as pipeline
        from egresslens.redact import url as public_url
        from egresslens.sources.storage import StorageError, StorageSource, container_client

        for name in opts.containers:
            try:
                with container_client(name, account_url=opts.account_url) as client:
                    source = StorageSource(client, None, since=parse_duration(opts.since), now=now)
                    stats = source.summary(pipeline.run(con, source))
            except StorageError as exc:
                raise IngestFailed(exitcodes.REMOTE_ERROR, f"ingest of {public_url(opts.account_url).rstrip('/')}/{name} "
                                                           f"failed: {exc}") from None
            done.append(f"storage {name}: {stats.blobs} blobs ({stats.unchanged} unchanged): {stats.counts.summary()}")
    return done


def read_policy(con, opts: NightlyOptions, now: datetime) -> tuple[str | None, int | None]:  # noqa: ANN001
    """Read the estate (exports given, and Azure each night) and keep it as a snapshot. (error, exit code)
    when reading from Azure failed: the report then uses the last snapshot."""
    from egresslens.estate import PolicyError, snapshots

    estate, source = opts.estate, opts.policy_source
    if opts.firewall_ids or opts.policy_ids:
        from egresslens.estate.arm import read_estate
        from egresslens.sources.arm import ArmError

        try:
            remote = read_estate(opts.firewall_ids, opts.policy_ids, endpoint=opts.arm_endpoint)
        except ArmError as exc:
            return f"reading the policy from Azure failed: {exc}".rstrip("."), exitcodes.REMOTE_ERROR
        except PolicyError as exc:
            return f"the policy Azure returned could not be read: {exc}".rstrip("."), exitcodes.INPUT_ERROR
        if estate is None:
            estate = remote
        else:
            estate.merge(remote)
    if estate is not None:
        snapshots.save(con, estate, source, now)
    return None, None


def _in_force(con, window):  # noqa: ANN001, ANN202
    from egresslens.estate import snapshots

    snap, note = snapshots.in_force(con, window.end)
    if snap is None:
        return None, []
    return snap.estate, [f"rules from the {snap.describe()}"] + ([note] if note else [])


def _dated(out_dir: Path, generated: datetime) -> Path:
    """The dated report's path: to the second, with `-2`, `-3` ... when a run of the same second has one."""
    reports = out_dir / "reports"
    base = f"egresslens-{generated:%Y-%m-%dT%H%M%SZ}"
    path, n = reports / f"{base}.html", 1
    while path.exists() or path.with_suffix(".json").exists():
        n += 1
        path = reports / f"{base}-{n}.html"
    return path


def prune(out_dir: Path, keep_days: int, now: datetime) -> None:
    """Remove dated reports older than `keep_days` (by the date in their name)."""
    cutoff = now - timedelta(days=keep_days)
    for p in (out_dir / "reports").glob("egresslens-*"):
        m = _DATED.match(p.name)
        if not m:
            continue
        stamp = m.group(1)
        when = datetime.strptime(stamp, "%Y-%m-%dT%H%M%SZ" if len(stamp) == 18 else "%Y-%m-%dT%H%MZ")
        if when < cutoff:
            p.unlink()


def run_nightly(opts: NightlyOptions, now: datetime | None = None) -> NightlyResult:
    """Lock, ingest, report. Busy when another run holds the lock or the store (StoreBusy when another
    process holds the store); any other failure propagates for :mod:`egresslens.errors` to classify."""
    from egresslens import store
    from egresslens.report import build_report, windows, write

    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    out_dir = Path(opts.out_dir)
    db_path = store.resolve_db_path(opts.db)
    with lock(out_dir, db_path):
        atomic.clear_leftovers(out_dir, out_dir / "reports")  # of a run killed while it wrote
        con = store.connect(opts.db)
        error, code, steps = None, None, []
        try:
            try:
                steps = ingest(con, opts, now)
            except IngestFailed as exc:
                error, code = str(exc), exc.code
            policy_error, policy_code = read_policy(con, opts, now)
            window, baseline = windows(con, opts.since, opts.compare_to)
            banner = [f"{error}. This report shows the data of the last good ingest, not of last night."] if error else []
            if policy_error:
                banner.append(f"{policy_error}. The report uses the last policy snapshot the store keeps.")
                if code is None:
                    error, code = policy_error, policy_code
            estate, notes = _in_force(con, window)
            report = build_report(con, window, baseline=baseline, policy=opts.policy, db=str(db_path),
                                  since=opts.since, generated_at=now, banner=banner, estate=estate, policy_notes=notes)
        finally:
            con.close()
        code = code if code is not None else report.exit_code(opts.fail_on)
        shared = None
        if opts.shared_plotly:  # one copy beside the dated reports and one beside latest.html (its link's folder)
            from egresslens.report.html import plotly_js_name, write_plotly_js

            shared = plotly_js_name()
            write_plotly_js(out_dir, shared)
        written = write(report, _dated(out_dir, now), "html", code, plotly_js=shared)
        latest = atomic.publish(out_dir, {"latest.html": written[0], "latest.json": written[1]}, written[0].stem)
        prune(out_dir, opts.keep_days, now)
    return NightlyResult(code, written + latest, steps, error)
