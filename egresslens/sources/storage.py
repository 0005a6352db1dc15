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

Rows are committed in batches of about CHUNK_BYTES together with each blob's progress (ingest_sources),
so a run killed at any point resumes with no gap and no duplicate. Memory stays at a few ranges.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from egresslens import errors, redact, store
from egresslens.ingest import Counts, Ingestor
from egresslens.sources.azure_errors import cause
from egresslens.sources.files import LineBatcher, _split_lines, jsonl_chunks, read_json_document
from egresslens.sources.sniff import blob_hour, detect_format, json_complete

# One ranged GET per RANGE_BYTES: a single request each (below the SDK's 32 MiB single-GET size).
RANGE_BYTES = int(os.environ.get("EGRESSLENS_BLOB_RANGE_BYTES", 8 << 20))
HEAD_BYTES = 1024  # fingerprint of a blob's start, to tell an append from a rewrite
PREFETCH = 4  # ranged GETs in flight (bounded memory: PREFETCH x RANGE_BYTES)
DOCUMENT_MAX = 512 << 20  # whole-document blobs (pre-2018, gzip) are spooled to a temp file
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


def _states(con, key_prefix: str) -> tuple[dict[str, dict], dict[str, dict]]:
    progress = {r[0]: {"size": r[1], "mtime_ns": r[2], "records_done": r[3], "offset_done": r[4], "complete": r[5]}
                for r in con.execute(
                    "SELECT source, size, mtime_ns, records_done, offset_done, complete FROM ingest_sources "
                    "WHERE starts_with(source, ?)", [key_prefix]).fetchall()}
    meta = {r[0]: {"etag": r[1], "fmt": r[2], "head_len": r[3], "head_md5": r[4]}
            for r in con.execute("SELECT source, etag, fmt, head_len, head_md5 FROM storage_blobs "
                                 "WHERE starts_with(source, ?)", [key_prefix]).fetchall()}
    return progress, meta


class _Batcher(LineBatcher):
    """LineBatcher that also writes the blobs' fingerprints (etag, start) after each batch, in one
    transaction: they only decide what to re-check, so they need not be atomic with the rows."""

    def __init__(self, ingestor: Ingestor):
        super().__init__(ingestor)
        self.meta: dict[str, dict] = {}

    def flush(self) -> Counts:
        counts = super().flush()
        self.write_meta()
        return counts

    def write_meta(self) -> None:
        if not self.meta:
            return
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        con = self.ingestor.con
        con.execute("BEGIN TRANSACTION")
        try:
            con.executemany("INSERT OR REPLACE INTO storage_blobs VALUES (?, ?, ?, ?, ?, ?)",
                            [[k, m.get("etag"), m.get("fmt"), m.get("head_len"), m.get("head_md5"), now]
                             for k, m in self.meta.items()])
            con.execute("COMMIT")
        except BaseException:
            store.rollback(con)
            raise
        self.meta = {}


@dataclass
class _Plan:
    name: str
    key: str
    size: int
    mtime_ns: int
    etag: str
    settled: bool
    state: dict | None
    meta: dict | None
    start: int = 0
    status: str = "new"
    needs_head_check: bool = False


def _plan(blob, key: str, state: dict | None, meta: dict | None, *, force: bool, settled: bool) -> _Plan:
    p = _Plan(blob.name, key, blob.size or 0, _ns(blob.last_modified), str(blob.etag or ""), settled,
              None if force else state, meta)
    st = p.state
    if st is None:
        return p
    same = st["size"] == p.size and st["mtime_ns"] == p.mtime_ns and (meta is None or meta["etag"] == p.etag)
    # `complete`: this version was read to its end, except perhaps a partial last line (offset_done < size)
    # that waits for more bytes, or for the blob to settle (then it is final)
    if same and st["complete"] and (st["offset_done"] >= p.size or not settled):
        p.status, p.start = "unchanged", p.size
        return p
    fmt = (meta or {}).get("fmt") or "jsonl"
    if fmt != "jsonl" or st["offset_done"] > p.size or st["size"] > p.size:
        p.status = "rewritten"  # documents are read whole; a shrunk blob was rewritten
        return p
    p.status, p.start = "appended", st["offset_done"]
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


def ingest_container(con, client, prefix: str | None = None, *, force: bool = False,
                     settle: timedelta = timedelta(hours=1), progress=None,
                     now: datetime | None = None, since: timedelta | None = None) -> Stats:
    """Ingest every blob under `prefix` in the container as one run (`Ingestor(con, "storage", ...)`).

    `progress`, if given, is a callable (total_bytes) -> callable(n_bytes), as for `ingest files`.
    `since` skips blobs whose hour ended before the window starts (a blob holds the records received
    in its hour); blobs whose names carry no hour are kept.
    """
    account, container = client.account_name, client.container_name
    where = f"container {container} in account {account}"
    key_prefix = f"{account}/{container}/"
    try:
        _sign_in(client)
        blobs = [b for b in client.list_blobs(name_starts_with=prefix or None)
                 if not b.name.endswith("/")]
    except Exception as exc:  # noqa: BLE001 - every SDK error becomes one sentence
        raise _explain(exc, where) from None
    now = now or datetime.now(timezone.utc)
    if since is not None:
        window_start = now - since
        blobs = [b for b in blobs if (blob_hour(b.name) or now) + timedelta(hours=1) > window_start]
    progress_by_key, meta_by_key = _states(con, key_prefix)
    plans = []
    for b in blobs:
        key = key_prefix + b.name
        lm = b.last_modified if b.last_modified.tzinfo else b.last_modified.replace(tzinfo=timezone.utc)
        plans.append(_plan(b, key, progress_by_key.get(key), meta_by_key.get(key), force=force,
                           settled=now - lm > settle))
    stats = Stats(blobs=len(plans), bytes_listed=sum(p.size for p in plans))
    ingestor = Ingestor(con, "storage", f"{account}/{container}/{prefix or ''}")
    stats.run_id = ingestor.run_id
    advance = progress(stats.bytes_listed) if progress else (lambda n: None)
    reader = _Reader(client)
    batcher = _Batcher(ingestor)
    try:
        with ThreadPoolExecutor(PREFETCH) as pool:
            _check_heads(plans, reader, pool)
            ranges = ((p, o, min(RANGE_BYTES, p.size - o)) for p in plans if p.status != "unchanged"
                      for o in range(p.start, p.size, RANGE_BYTES))
            fetched = _bounded(ranges, lambda r: reader.get(r[0].name, r[1], r[2]), pool, PREFETCH)
            by_blob = _group(fetched)
            for p in plans:
                if p.status == "unchanged":
                    advance(p.size)
                    stats.results.append(BlobResult(p.name, "unchanged"))
                    continue
                advance(p.start)
                parts = by_blob(p) if p.start < p.size else iter(())
                stats.results.append(_read_blob(ingestor, batcher, p, parts, advance))
            batcher.flush()
    except BaseException as exc:
        from azure.core.exceptions import AzureError

        failure = _explain(exc, where) if isinstance(exc, AzureError) else None
        ingestor.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                        (str(failure) if failure else errors.sentence(exc))[:500])
        if failure is not None:
            raise failure from None
        raise
    stats.counts = ingestor.finish()
    stats.bytes_downloaded, stats.requests = reader.bytes, reader.requests
    for r in stats.results:
        if r.status in ("new", "appended", "rewritten", "unchanged"):
            setattr(stats, r.status, getattr(stats, r.status) + 1)
    return stats


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


def _read_blob(ingestor: Ingestor, batcher: _Batcher, p: _Plan, parts: Iterator[tuple[int, bytes]],
               advance) -> BlobResult:
    first = next(parts, None)
    if first is None:  # no new bytes (metadata touched, empty blob): remember this version, download nothing
        st = p.state or {}
        done, records = (st.get("offset_done") or 0, st.get("records_done") or 0) if p.status == "appended" else (0, 0)
        ingestor.mark_source(p.key, size=p.size, mtime_ns=p.mtime_ns, records_done=records, offset_done=done,
                             complete=True)
        batcher.meta[p.key] = {**(p.meta or {}), "etag": p.etag}
        return BlobResult(p.name, "waiting" if done < p.size else p.status, resumed_from=p.start)
    _, data0 = first
    if not data0:
        return BlobResult(p.name, "gone")  # deleted or shrunk since listing: the next run sees it
    meta = {"etag": p.etag, "fmt": (p.meta or {}).get("fmt") or "jsonl",
            "head_len": (p.meta or {}).get("head_len"), "head_md5": (p.meta or {}).get("head_md5")}
    if p.start == 0:
        head = data0[:HEAD_BYTES]
        meta.update(head_len=len(head), head_md5=hashlib.md5(head).hexdigest(), fmt=_sniff(data0))
    batcher.meta[p.key] = meta
    stream = _chain(first, parts)
    if meta["fmt"] != "jsonl":
        batcher.flush()
        return _read_document(ingestor, batcher, p, meta["fmt"], stream, advance)
    return _read_lines(batcher, p, stream, advance)


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


def _read_lines(batcher: LineBatcher, p: _Plan, stream, advance) -> BlobResult:
    st = p.state if p.status == "appended" else None
    line_no = st["records_done"] if st else 0
    offset = p.start
    carry = b""
    got = 0
    for off, data in stream:
        if off != p.start + got or not data:  # blob changed under us (short range): the next run resumes
            break
        advance(len(data))
        got += len(data)
        is_last = off + len(data) >= p.size
        buf = carry + data
        cut = buf.rfind(b"\n")
        if is_last:
            tail = buf[cut + 1:]
            if tail.strip() and (p.settled or json_complete(tail)):
                cut = len(buf) - 1  # the last record is whole (or final): take it
        elif cut < 0:
            carry = buf
            continue
        block, carry = buf[: cut + 1], buf[cut + 1:]
        table = None
        if block:
            offset += len(block)
            text = block[:-1] if block.endswith(b"\n") else block
            table, lines = _split_lines(text, p.key, line_no + 1)
            line_no += lines
        if table is not None or is_last:  # complete: read to the end (a partial last line may wait)
            batcher.add(table, dict(source=p.key, size=p.size, mtime_ns=p.mtime_ns, records_done=line_no,
                                    offset_done=offset, complete=is_last))
    return BlobResult(p.name, p.status, resumed_from=p.start, bytes_read=got)


def _read_document(ingestor: Ingestor, batcher: LineBatcher, p: _Plan, fmt: str, stream, advance) -> BlobResult:
    """gzip or a JSON document: spool the whole blob, then reuse the file readers."""
    if p.size > DOCUMENT_MAX:
        raise StorageError(f"blob {p.name} is a {p.size:,}-byte {fmt} document, larger than {DOCUMENT_MAX:,} "
                           "bytes: download it and use `egresslens ingest files`.")
    stat = SimpleNamespace(st_size=p.size, st_mtime_ns=p.mtime_ns)
    got = 0
    with tempfile.TemporaryDirectory(prefix="egresslens-blob-") as tmp:
        path = Path(tmp) / "blob"
        with open(path, "wb") as fh:
            for _, data in stream:
                fh.write(data)
                got += len(data)
                advance(len(data))
        kind = detect_format(path)
        if kind == "jsonl":
            for table, prog in jsonl_chunks(path, p.key, None, stat, lambda n: None):
                batcher.add(table, prog)
            counts = batcher.flush()
        elif kind == "json":
            counts = read_json_document(ingestor, path, p.key, stat)
        else:  # empty, or CSV in a blob: not a firewall archive
            ingestor.mark_source(p.key, size=p.size, mtime_ns=p.mtime_ns, complete=True)
            counts = Counts()
    return BlobResult(p.name, p.status, counts=counts, bytes_read=got)
