"""Read the storage-account archive of firewall logs (`insights-logs-<category>` containers) incrementally.

Azure writes one blob per firewall and hour, `resourceId=/SUBSCRIPTIONS/.../y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`,
JSON Lines since late 2018 and a `{"records": [...]}` document before. The blob of the current hour keeps
growing, so each blob is read with ranged GETs from the byte offset committed by the last run:

* unchanged blobs (same size, last-modified and etag as last time) are not downloaded at all;
* a grown blob is read from the stored offset, after a cheap check that its first bytes are still the
  ones read before (a 1 KiB ranged GET);
* a rewritten blob (shrank, or its first bytes changed) is read again from 0: content-derived event ids
  keep the store duplicate-free;
* only complete lines are committed; a trailing partial line waits for the next run, unless it is
  already a complete JSON record or the blob has not changed for `settle` (then it is final and, if
  broken, quarantined).

Each blob is a unit; its lines reach the ingest loop in batches with the blob's progress and fingerprint
(committed together, so a run killed at any point resumes with no gap and no duplicate). Memory stays at
a few ranges. A whole-document or gzip blob is spooled to a scratch file and read as `ingest files` reads
a file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from egresslens import errors, redact
from egresslens.sources.azure_errors import cause
from egresslens.sources.batch import Batch, Context, Counts, Lines, Progress, Unit
from egresslens.sources.files import read_file
from egresslens.sources.lines import Splitter
from egresslens.sources.sniff import blob_hour, json_complete

# One ranged GET per RANGE_BYTES: a single request each (below the SDK's 32 MiB single-GET size).
RANGE_BYTES = int(os.environ.get("EGRESSLENS_BLOB_RANGE_BYTES", 8 << 20))
HEAD_BYTES = 1024  # fingerprint of a blob's start, to tell an append from a rewrite
PREFETCH = 4  # ranged GETs in flight (bounded memory: PREFETCH x RANGE_BYTES)
GZIP_MAGIC = b"\x1f\x8b"


class StorageError(RuntimeError):
    """A permanent failure, with a message meant for the user as is (never a secret)."""


@dataclass
class BlobResult:
    name: str
    status: str  # unchanged | new | appended | rewritten | waiting | gone
    counts: Counts = field(default_factory=Counts)
    resumed_from: int = 0
    bytes_read: int = 0


@dataclass
class Stats:
    run_id: int = 0
    blobs: int = 0
    unchanged: int = 0
    new: int = 0
    appended: int = 0
    rewritten: int = 0
    bytes_listed: int = 0
    bytes_downloaded: int = 0
    requests: int = 0
    counts: Counts = field(default_factory=Counts)
    results: list[BlobResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        c = self.counts
        return {"run_id": self.run_id, "blobs": self.blobs, "blobs_unchanged": self.unchanged,
                "blobs_new": self.new, "blobs_appended": self.appended, "blobs_rewritten": self.rewritten,
                "bytes_listed": self.bytes_listed, "bytes_downloaded": self.bytes_downloaded,
                "requests": self.requests, "records_read": c.read, "stored": c.stored,
                "duplicates": c.duplicates, "quarantined": c.quarantined, "stored_per_table": c.per_table}


# -- clients and errors ------------------------------------------------------------------------------

def container_client(container: str, *, account_url: str | None = None, connection_string: str | None = None,
                     credential=None):
    """A ContainerClient from a connection string, a URL carrying a SAS token, or a token credential."""
    from azure.storage.blob import ContainerClient

    if not account_url and connection_string:  # an explicit --account-url wins over the environment's
        _check_account_key(connection_string)
        try:
            return ContainerClient.from_connection_string(connection_string, container)
        except ValueError:
            raise StorageError("The storage connection string is malformed: copy it from the storage account's "
                               "Access keys page, or use --account-url with az login.") from None
    if not account_url:
        raise StorageError("Give --account-url (https://<account>.blob.core.windows.net) or a connection string "
                           "(--connection-string or AZURE_STORAGE_CONNECTION_STRING).")
    if not re.match(r"^https?://", account_url):
        raise StorageError(f"--account-url must start with https://, not {redact.url(account_url)!r}")
    if "?" in account_url:  # a SAS token in the URL is the credential
        credential = None
    elif credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    try:
        return ContainerClient(account_url, container, credential=credential)
    except ValueError as exc:
        raise StorageError(f"Cannot use account URL {redact.url(account_url)}: {redact.text(exc)}") from None


def _check_account_key(connection_string: str) -> None:
    """A malformed account key is a usage error, found before any request (the SDK only fails when
    it signs the first one, as if the service had refused it)."""
    import base64
    import binascii

    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    key = next((v for k, v in parts.items() if k.strip().lower() == "accountkey"), None)
    if key is None:
        return
    try:
        ok = bool(key.strip()) and len(base64.b64decode(key.strip(), validate=True)) > 0
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise StorageError("The AccountKey in the storage connection string is not a valid key (base64): copy the "
                           "connection string again from the storage account's Access keys page.")


def _explain(exc: BaseException, where: str) -> StorageError:
    """One sentence for an SDK error."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    code = getattr(exc, "error_code", None) or ""
    code = str(getattr(code, "value", code))
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ResourceNotFoundError) or code in ("ContainerNotFound", "ResourceNotFound"):
        return StorageError(f"{where} was not found (404): check the account URL and the container name "
                            "(insights-logs-<category>, e.g. insights-logs-azfwnetworkrule).")
    if isinstance(exc, ClientAuthenticationError) and status is None:
        return StorageError(f"No Azure credential could sign in ({cause(exc)}): run az login, set "
                            "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or pass a connection string.")
    if status == 401 or code == "AuthenticationFailed":
        return StorageError(f"The storage account rejected the credential for {where} ({status} {code}): check "
                            "the account key or the SAS token's signature and expiry, or sign in again (az login).")
    if code == "AuthorizationFailure":
        return StorageError(f"The storage account refused access to {where} (403 AuthorizationFailure): its "
                            "network rules may not allow this machine (Networking: add your IP or use a private "
                            "endpoint), or the key, SAS token or identity (Storage Blob Data Reader) is wrong.")
    if status == 403 or code.startswith("Authorization"):
        return StorageError(f"The credential may not read {where} (403 {code or 'Forbidden'}): grant the identity "
                            "the Storage Blob Data Reader role on the storage account or container (Owner or "
                            "Reader alone is not enough), or check the SAS token's permissions (rl) and expiry.")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return StorageError(f"Could not reach {where} ({cause(exc)}): check the account URL and the "
                            "network; blobs committed so far are stored, re-run to resume.")
    if isinstance(exc, HttpResponseError):
        return StorageError(f"The storage service refused a request for {where} ({status or 'no status'}"
                            f"{' ' + code if code else ''}): {cause(exc)}")
    return StorageError(f"Reading {where} failed: {cause(exc)}")


# -- per-blob state ----------------------------------------------------------------------------------

def _ns(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    delta = t - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


@dataclass
class _Plan:
    name: str
    key: str
    size: int
    mtime_ns: int
    etag: str
    settled: bool
    state: Progress | None
    meta: dict | None
    start: int = 0
    status: str = "new"
    needs_head_check: bool = False


def _plan(blob, key: str, state: Progress | None, *, settled: bool) -> _Plan:
    meta = dict(state.fingerprint) if state is not None and state.fingerprint is not None else None
    p = _Plan(blob.name, key, blob.size or 0, _ns(blob.last_modified), str(blob.etag or ""), settled, state, meta)
    st = p.state
    if st is None:
        return p
    same = st.size == p.size and st.mtime_ns == p.mtime_ns and (meta is None or meta["etag"] == p.etag)
    # `complete`: this version was read to its end, except perhaps a partial last line (offset_done < size)
    # that waits for more bytes, or for the blob to settle (then it is final)
    if same and st.complete and (st.offset_done >= p.size or not settled):
        p.status, p.start = "unchanged", p.size
        return p
    fmt = (meta or {}).get("fmt") or "jsonl"
    if fmt != "jsonl" or st.offset_done > p.size or (st.size or 0) > p.size:
        p.status = "rewritten"  # documents are read whole; a shrunk blob was rewritten
        return p
    p.status, p.start = "appended", st.offset_done
    p.needs_head_check = bool(meta and meta.get("head_len")) and p.start > 0
    return p


# -- reading -----------------------------------------------------------------------------------------

def _bounded(items: Iterable, fn: Callable, pool: ThreadPoolExecutor, window: int) -> Iterator:
    """fn over items in a pool, at most `window` in flight, results in order."""
    pending: deque = deque()
    it = iter(items)
    for item in it:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            break
    while pending:
        item, fut = pending.popleft()
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(fn, nxt)))
        yield item, fut.result()


class _Reader:
    """Ranged GETs over one container."""

    def __init__(self, client):
        self.client = client
        self.requests = 0
        self.bytes = 0

    def get(self, name: str, offset: int, length: int) -> bytes:
        from azure.core.exceptions import HttpResponseError

        self.requests += 1
        try:
            data = self.client.get_blob_client(name).download_blob(offset=offset, length=length).readall()
        except HttpResponseError as exc:
            if exc.status_code in (404, 416):  # deleted or shrunk since listing: the next run sees it
                return b""
            raise
        self.bytes += len(data)
        return data


class StorageSource:
    """`egresslens ingest storage`: every blob under a prefix of one archive container, each a unit.

    `since` skips blobs whose hour ended before the window starts (a blob holds the records received in its
    hour); blobs whose names carry no hour are kept. `settle`: a blob unchanged for this long is final (its
    unterminated last line, if any, is read or quarantined rather than waited for)."""

    kind = "storage"

    def __init__(self, client, prefix: str | None = None, *, settle: timedelta = timedelta(hours=1),
                 now: datetime | None = None, since: timedelta | None = None):
        self.client, self.prefix, self.settle, self.since = client, prefix, settle, since
        self.now = now or datetime.now(timezone.utc)
        account, container = client.account_name, client.container_name
        self.where = f"container {container} in account {account}"
        self.key_prefix = f"{account}/{container}/"
        self.description = f"{account}/{container}/{prefix or ''}"
        self.reader = _Reader(client)
        self.stats = Stats()

    def failure_message(self, exc: BaseException) -> str:
        return str(exc) if isinstance(exc, StorageError) else errors.sentence(exc)

    def discover(self, ctx: Context) -> list[Unit]:
        """List the blobs and compare each with what was read of it: unchanged ones are skipped, grown ones
        read on (after checking their first bytes are still the ones read), rewritten ones read again."""
        try:
            _sign_in(self.client)
            blobs = [b for b in self.client.list_blobs(name_starts_with=self.prefix or None) if not b.name.endswith("/")]
        except Exception as exc:  # noqa: BLE001 - every SDK error becomes one sentence
            raise _explain(exc, self.where) from None
        if self.since is not None:
            window_start = self.now - self.since
            blobs = [b for b in blobs if (blob_hour(b.name) or self.now) + timedelta(hours=1) > window_start]
        plans = []
        for b in blobs:
            key = self.key_prefix + b.name
            lm = b.last_modified if b.last_modified.tzinfo else b.last_modified.replace(tzinfo=timezone.utc)
            plans.append(_plan(b, key, ctx.progress.get(key), settled=self.now - lm > self.settle))
        try:
            with ThreadPoolExecutor(PREFETCH) as pool:
                _check_heads(plans, self.reader, pool)
        except Exception as exc:  # noqa: BLE001
            raise _explain(exc, self.where) from None
        self.stats = Stats(blobs=len(plans), bytes_listed=sum(p.size for p in plans))
        self.stats.unchanged = sum(p.status == "unchanged" for p in plans)
        return [Unit(p.key, p.size - p.start, resume=p.state, skip="unchanged" if p.status == "unchanged" else None,
                     ref=p) for p in plans]

    def read_all(self, units: list[Unit], ctx: Context) -> Iterator[Batch]:
        """Every blob to read, its ranges fetched PREFETCH at a time across blobs, in order."""
        plans = [u.ref for u in units]
        try:
            with ThreadPoolExecutor(PREFETCH) as pool:
                ranges = ((p, o, min(RANGE_BYTES, p.size - o)) for p in plans for o in range(p.start, p.size, RANGE_BYTES))
                by_blob = _group(_bounded(ranges, lambda r: self.reader.get(r[0].name, r[1], r[2]), pool, PREFETCH))
                for p in plans:
                    result = BlobResult(p.name, p.status, resumed_from=p.start)
                    self.stats.results.append(result)
                    yield from self._blob(p, by_blob(p) if p.start < p.size else iter(()), result, ctx)
        except Exception as exc:
            from azure.core.exceptions import AzureError

            if isinstance(exc, AzureError):
                raise _explain(exc, self.where) from None
            raise
        finally:
            self.stats.bytes_downloaded, self.stats.requests = self.reader.bytes, self.reader.requests
        for r in self.stats.results:
            if r.status in ("new", "appended", "rewritten"):
                setattr(self.stats, r.status, getattr(self.stats, r.status) + 1)

    def summary(self, result) -> Stats:
        """The run's statistics, with the loop's counts (`ingest.run`'s result)."""
        self.stats.run_id, self.stats.counts = result.run_id, result.counts
        return self.stats

    def _blob(self, p: _Plan, parts: Iterator[tuple[int, bytes]], result: BlobResult, ctx: Context) -> Iterator[Batch]:
        first = next(parts, None)
        if first is None:  # no new bytes (metadata touched, empty blob): remember this version, download nothing
            st = p.state
            done, records = (st.offset_done, st.records_done) if st and p.status == "appended" else (0, 0)
            if done < p.size:
                result.status = "waiting"
            yield Batch(p.key, until=[Progress(p.key, p.size, p.mtime_ns, records, done, True,
                                               {**(p.meta or {}), "etag": p.etag})])
            return
        _, data0 = first
        if not data0:
            result.status = "gone"  # deleted or shrunk since listing: the next run sees it
            return
        meta = {"etag": p.etag, "fmt": (p.meta or {}).get("fmt") or "jsonl",
                "head_len": (p.meta or {}).get("head_len"), "head_md5": (p.meta or {}).get("head_md5")}
        if p.start == 0:
            head = data0[:HEAD_BYTES]
            meta.update(head_len=len(head), head_md5=hashlib.md5(head).hexdigest(), fmt=_sniff(data0))
        stream = _chain(first, parts)
        if meta["fmt"] != "jsonl":
            yield from _read_document(p, meta, stream, result, ctx)
        else:
            yield from _read_lines(p, meta, stream, result, ctx)


def _sign_in(client) -> None:
    """Get a token once up front: a missing credential fails in a second with one sentence, rather than
    after the storage pipeline's retries and a warning per attempt."""
    import logging

    cred = getattr(client, "credential", None)
    if cred is None or not hasattr(cred, "get_token"):
        return  # account key or SAS
    logging.getLogger("azure.identity").setLevel(logging.ERROR)  # its chain report is summed up in our sentence
    cred.get_token("https://storage.azure.com/.default")


def _check_heads(plans: list[_Plan], reader: _Reader, pool: ThreadPoolExecutor) -> None:
    """A grown blob must still start with the bytes read before, else it was rewritten: read from 0."""
    todo = [p for p in plans if p.needs_head_check]
    for p, head in zip(todo, pool.map(lambda p: reader.get(p.name, 0, p.meta["head_len"]), todo)):
        if hashlib.md5(head).hexdigest() != p.meta["head_md5"]:
            p.status, p.start = "rewritten", 0


def _group(fetched: Iterator):
    """Hand each plan its own ranges, in order, from the single ordered stream of fetched ranges.

    Ranges of a plan its reader stopped early on are dropped when the next plan asks for its own."""
    state: dict = {"peek": None, "current": None}
    finished: set[int] = set()

    def parts(plan: _Plan) -> Iterator[tuple[int, bytes]]:
        if state["current"] is not None and state["current"] is not plan:
            finished.add(id(state["current"]))
        state["current"] = plan
        while True:
            if state["peek"] is None:
                state["peek"] = next(fetched, None)
                if state["peek"] is None:
                    return
            (p, off, _), data = state["peek"]
            if p is not plan:
                if id(p) in finished:
                    state["peek"] = None
                    continue
                return
            state["peek"] = None
            yield off, data

    return parts


def _chain(first, rest):
    yield first
    yield from rest


def _sniff(data: bytes) -> str:
    """jsonl, or a whole document: gzip, or JSON spread over lines (pre-2018 `{"records": [...]}`)."""
    if data[:2] == GZIP_MAGIC:
        return "gzip"
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    line = text.split(b"\n", 1)[0].strip()
    if line in (b"{", b"[") or line.startswith(b"[{") or line == b"[]":
        return "document"
    return "jsonl"


def _read_lines(p: _Plan, meta: dict, stream, result: BlobResult, ctx: Context) -> Iterator[Batch]:
    st = p.state if p.status == "appended" else None
    split = Splitter(p.key, offset=p.start, lines=st.records_done if st else 0, bound=ctx.limits.line_bytes)
    got = 0
    for off, data in stream:
        if off != p.start + got or not data:  # blob changed under us (short range): the next run resumes
            break
        got += len(data)
        is_last = off + len(data) >= p.size
        table, rejects = split.feed(data)
        if is_last and (split.skipping or (split.tail.strip() and (p.settled or json_complete(split.tail)))):
            more, late = split.take_tail()  # the last record is whole (or final): take it
            table = more if table is None else (table if more is None else _concat(table, more))
            rejects += late
        # complete: read to the end (a partial last line may wait)
        yield Batch(p.key, Lines(table) if table is not None and table.num_rows else None, rejects=rejects,
                    until=[Progress(p.key, p.size, p.mtime_ns, split.lines, split.offset, is_last, meta)],
                    bytes=len(data), status="jsonl")
    result.bytes_read = got


def _concat(a, b):
    import pyarrow as pa

    return pa.concat_tables([a, b])


def _read_document(p: _Plan, meta: dict, stream, result: BlobResult, ctx: Context) -> Iterator[Batch]:
    """gzip or a JSON document: spool the whole blob to a scratch file, then read it as `ingest files` would."""
    stat = SimpleNamespace(st_size=p.size, st_mtime_ns=p.mtime_ns)
    path = Path(f"{ctx.scratch}.blob")
    got = 0
    try:
        with open(path, "wb") as fh:
            for _, data in stream:
                fh.write(data)
                got += len(data)
        for i, batch in enumerate(read_file(path, p.key, stat, None, ctx)):
            batch.until = [replace(u, fingerprint=meta) for u in batch.until]
            batch.bytes = got if i == 0 else 0
            yield batch
    finally:
        path.unlink(missing_ok=True)
    result.bytes_read = got
