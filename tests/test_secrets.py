"""No password or signature reaches an output: one redaction helper (egresslens.redact) for every
message, report and table, and logged URLs stored without their query values unless a setting keeps them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from egresslens import exitcodes, redact
from egresslens.cli import app
from egresslens.escape import csv_cell, html, markdown, plain, terminal
from test_storage import azurite, container  # noqa: F401 - fixtures: an Azurite blob service and a container

runner = CliRunner()
PASSWORD, SIGNATURE = "hunter2-pass", "c2lnbmF0dXJlLXNlY3JldA"
URL = f"https://user:{PASSWORD}@acct.blob.core.windows.net/c?sv=2024&sig={SIGNATURE}&token=tok-{PASSWORD}"


@pytest.mark.parametrize("helper", [plain, terminal, html, markdown, csv_cell, redact.text])
def test_every_text_medium_redacts_userinfo_and_secret_parameters(helper):
    out = helper(f"cannot reach {URL} (AccountKey=abc123==;EndpointSuffix=core.windows.net)")
    assert PASSWORD not in out and SIGNATURE not in out and "abc123" not in out
    assert "windows" in out and "REDACTED" in out


def test_a_url_named_in_a_message_keeps_its_host_and_path_only():
    assert redact.url(URL) == "https://***@acct.blob.core.windows.net/c"


def _line(url: str) -> str:
    return json.dumps({"time": "2026-03-01T10:00:00.000000Z", "resourceId": "/SUBSCRIPTIONS/X/RESOURCEGROUPS/R/PROVIDERS/"
                       "MICROSOFT.NETWORK/AZUREFIREWALLS/FW", "category": "AZFWApplicationRule",
                       "properties": {"Protocol": "HTTPS", "SourceIp": "10.0.0.4", "SourcePort": 40000,
                                      "DestinationPort": 443, "Fqdn": "files.example.com", "TargetUrl": url,
                                      "Action": "Allow", "Policy": "p", "RuleCollectionGroup": "g",
                                      "RuleCollection": "c", "Rule": "r", "ActionReason": "", "IsTlsInspected": True,
                                      "WebCategory": "", "IsExplicitProxyRequest": False}})


def _stored(db) -> list[str]:  # noqa: ANN001
    result = runner.invoke(app, ["sql", "SELECT target_url FROM flows ORDER BY 1", "--db", str(db), "--format", "json"])
    return [json.loads(x)["target_url"] for x in result.output.splitlines()]


def test_stored_target_urls_keep_the_path_and_drop_query_values_unless_the_setting_keeps_them(tmp_path, monkeypatch):
    logged = f"https://user:{PASSWORD}@files.example.com/exports/q3.csv?sig={SIGNATURE}&user=bob#part"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "PT1H.json").write_text(_line(logged) + "\n")
    db = tmp_path / "s.duckdb"
    assert runner.invoke(app, ["ingest", "files", str(tmp_path / "logs"), "--db", str(db), "-q"]).exit_code == 0
    assert _stored(db) == ["https://files.example.com/exports/q3.csv?sig=&user="]
    # the same event ingested again with the setting on is still one event (its id is over the URL as logged)
    monkeypatch.setenv(redact.KEEP_QUERY_ENV, "1")
    assert runner.invoke(app, ["ingest", "files", str(tmp_path / "logs"), "--db", str(db), "-q", "--force"]).exit_code == 0
    assert len(_stored(db)) == 1
    kept = tmp_path / "kept.duckdb"
    assert runner.invoke(app, ["ingest", "files", str(tmp_path / "logs"), "--db", str(kept), "-q"]).exit_code == 0
    assert _stored(kept) == [logged]


def test_a_password_in_the_account_url_reaches_neither_stderr_nor_the_report(azurite, container, tmp_path):
    # Azurite answers at once: a SAS URL whose signature is wrong, with a password in its userinfo
    endpoint = azurite.split("BlobEndpoint=")[1].split(";")[0].rstrip("/")
    url = endpoint.replace("http://", f"http://user:{PASSWORD}@") + f"?sv=2024-08-04&sp=rl&sr=c&sig={SIGNATURE}"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "egresslens.cli", "nightly", "--out-dir", str(out),
                           "--db", str(tmp_path / "s.duckdb"), "--account-url", url, "--container",
                           container.container_name, "--compare-to", ""], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AZURE_STORAGE_CONNECTION_STRING": ""})
    assert proc.returncode == exitcodes.REMOTE_ERROR, proc.stderr
    assert f"ingest of {endpoint.replace('http://', 'http://***@')}/{container.container_name} failed" in proc.stderr
    written = [proc.stdout, proc.stderr, (out / "latest.html").read_text(), (out / "latest.json").read_text()]
    for text in written:
        assert PASSWORD not in text and SIGNATURE not in text
    runs = runner.invoke(app, ["sql", "SELECT message FROM ingest_runs", "--db", str(tmp_path / "s.duckdb"),
                               "--format", "json"]).output
    assert PASSWORD not in runs and SIGNATURE not in runs


def test_the_stored_url_is_the_same_in_sql_as_in_python_plain_urls_included():
    """The store drops query values in SQL (`stored_url_sql`, a plain URL kept as it is without running a
    pattern); its Python twin says what it must give, on plain, odd and hostile URLs alike."""
    import duckdb

    from hostile import TEXTS

    urls = ["https://api.example.com/v1/items", "http://a.example/x?token=s3cr3t&b=2#frag", "https://u:p@h.example/p",
            "https://h.example/p#only-fragment", "https://h.example/?", "https://h.example/p?a&b=&=c",
            "ftp://user@h.example/p?q=1", "h.example/no-scheme?k=v", "", "@", "?#@", "https://h/p?a=1@x"]
    urls += [f"https://h.example/{t}" for t in TEXTS.values()] + list(TEXTS.values())
    got = duckdb.connect().execute(f"SELECT {redact.stored_url_sql('u')} FROM (SELECT unnest($urls) AS u, "
                                   "generate_subscripts($urls, 1) AS i) ORDER BY i", {"urls": urls}).fetchall()
    assert [g for (g,) in got] == [redact.stored_url(u) for u in urls]
