"""Azure failures are one sentence with their cause: a DNS lookup, a refused connection, a timeout,
a certificate; never a dozen lines, never "(None)". A malformed account key is a usage error."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from typer.testing import CliRunner

from egresslens import exitcodes
from egresslens.cli import app
from egresslens.sources import storage
from egresslens.redact import text as redact
from egresslens.sources.azure_errors import cause

runner = CliRunner()

# What urllib3 and azure-identity really say (DefaultAzureCredential lists one line per credential).
NAME_RESOLUTION = ("<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to resolve "
                   "'acct.blob.core.windows.net' ([Errno -2] Name or service not known)")
CREDENTIAL_CHAIN = """DefaultAzureCredential failed to retrieve a token from the included credentials.
Attempted credentials:
	EnvironmentCredential: Authentication failed: HTTPSConnection(host='login.microsoftonline.com', port=443): Failed to resolve 'login.microsoftonline.com' ([Errno -2] Name or service not known)
	ManagedIdentityCredential: ManagedIdentityCredential authentication unavailable, no response from the IMDS endpoint.
	SharedTokenCacheCredential: SharedTokenCacheCredential authentication unavailable. No accounts were found in the cache.
	AzureCliCredential: Azure CLI not found on path
	AzurePowerShellCredential: PowerShell is not installed
	AzureDeveloperCliCredential: Azure Developer CLI could not be found.
To mitigate this issue, please refer to the troubleshooting guidelines here at https://aka.ms/azsdk/python/identity/defaultazurecredential/troubleshoot."""
NO_CREDENTIAL = CREDENTIAL_CHAIN.replace(
    "Authentication failed: HTTPSConnection(host='login.microsoftonline.com', port=443): Failed to resolve "
    "'login.microsoftonline.com' ([Errno -2] Name or service not known)",
    "EnvironmentCredential authentication unavailable. Environment variables are not fully configured.")


def chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as e:
            raise outer from e
    except Exception as e:
        return e


@pytest.mark.parametrize(("exc", "expected"), [
    (ServiceRequestError(NAME_RESOLUTION), "DNS lookup of acct.blob.core.windows.net failed"),
    (chained(ServiceRequestError("Connection error"), OSError(NAME_RESOLUTION)), "DNS lookup of acct.blob.core.windows.net failed"),
    (ClientAuthenticationError(CREDENTIAL_CHAIN), "DNS lookup of login.microsoftonline.com failed"),
    (ClientAuthenticationError(NO_CREDENTIAL), "EnvironmentCredential: EnvironmentCredential authentication unavailable. "
                                               "Environment variables are not fully configured."),
    (ServiceRequestError("HTTPSConnection(host='x.example', port=443): [Errno 111] Connection refused"),
     "connection to x.example refused"),
    (ServiceRequestError("HTTPSConnection(host='x.example', port=443): Read timed out. (read timeout=30)"),
     "timed out reaching x.example"),
    (ServiceRequestError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed (_ssl.c:1006)"),
     "TLS certificate not trusted"),
])
def test_the_cause_is_a_few_words(exc, expected):
    assert cause(exc) == expected


def test_secrets_never_reach_a_message():
    assert "abc123" not in cause(ServiceRequestError("GET https://a.blob.core.windows.net/c?sv=1&sig=abc123 failed"))
    assert redact("AccountKey=abc123==;EndpointSuffix=x") == "AccountKey=REDACTED;EndpointSuffix=x"


def test_storage_errors_name_the_cause_once():
    err = storage._explain(ServiceRequestError(NAME_RESOLUTION), "container c in account acct")
    assert str(err) == ("Could not reach container c in account acct (DNS lookup of acct.blob.core.windows.net "
                        "failed): check the account URL and the network; blobs committed so far are stored, "
                        "re-run to resume.")
    signed_out = str(storage._explain(ClientAuthenticationError(CREDENTIAL_CHAIN), "container c"))
    assert "\n" not in signed_out and "DNS lookup of login.microsoftonline.com failed" in signed_out


def test_no_status_never_shows_as_none():
    err = str(storage._explain(HttpResponseError("The connection was closed"), "container c"))
    assert "None" not in err and "\n" not in err


@pytest.mark.parametrize("key", ["not-base64!!", "", "YWJj=x"])
def test_a_malformed_account_key_is_a_usage_error(tmp_path, key):
    conn = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};EndpointSuffix=core.windows.net"
    result = runner.invoke(app, ["ingest", "storage", "--container", "c", "--connection-string", conn,
                                 "--db", str(tmp_path / "s.duckdb"), "--quiet"])
    assert result.exit_code == exitcodes.USAGE, result.output
    assert result.output.strip().splitlines() == [
        "error: The AccountKey in the storage connection string is not a valid key (base64): copy the connection "
        "string again from the storage account's Access keys page."]


def test_a_well_formed_account_key_passes_the_check():
    key = base64.b64encode(b"k" * 64).decode()
    storage._check_account_key(f"AccountName=acct;AccountKey={key};EndpointSuffix=core.windows.net")


def test_sdk_warnings_do_not_repeat_the_error():
    """azure-identity logs its dozen lines as a warning; with no logging configured Python would print
    them to stderr before the command's own sentence."""
    code = ("import logging, egresslens.cli; "
            "logging.getLogger('azure.identity._credentials.chained').warning('DefaultAzureCredential failed')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == ""
