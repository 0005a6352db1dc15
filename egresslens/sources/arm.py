"""Read-only Azure Resource Manager requests: one client every ARM read shares (the firewall's SNAT
inputs, the policy and its rule collection groups, IP Groups).

azure-core's pipeline is used directly rather than azure-mgmt-network: azure-core is already a
dependency (of azure-identity and azure-monitor-query), while azure-mgmt-network would add about
16 MB of generated models (plus azure-mgmt-core and isodate) for a handful of GETs. The pipeline:
`BearerTokenCredentialPolicy` (scope ``{arm}/.default``, so sovereign clouds get their own
audience), a retry policy (GET retried on 408, 429, 500, 502, 503 and 504, honouring
``Retry-After``) and azure-core's redacting logging policy, so tokens never reach a log.
Credentials default to azure-identity's ``DefaultAzureCredential`` (environment, workload identity,
managed identity, `az login`); any object with ``get_token`` works (tests pass a fake one).

Every failure becomes :class:`ArmError` with one sentence for the user: no credential, no answer,
401/403 (the Reader role it needs), 404, 429 after the retries, or a body that is no JSON.
"""

from __future__ import annotations

import re
from typing import Any, Iterator
from urllib.parse import urlparse

ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
API_VERSION = "2024-05-01"
MAX_PAGES = 1000  # nextLink pages followed for one list; a loop beyond that is the service's mistake

# a Microsoft.Network resource (or a child of one, or a child collection): no query, no fragment
_RESOURCE_PATH = re.compile(r"^/subscriptions/[^/?#]+/resourceGroups/[^/?#]+/providers/Microsoft\.Network/"
                            r"[A-Za-z]+/[^/?#]+(/[A-Za-z]+(/[^/?#]+)?)?/?$", re.IGNORECASE)


class ArmError(Exception):
    """A read from Azure Resource Manager failed; the message is one sentence for the user. `status`:
    the HTTP status Azure answered with, when it answered."""

    status: int | None = None


def scope_for(endpoint: str) -> str:
    """Token scope for an ARM endpoint (sovereign clouds use their own audience)."""
    if endpoint.startswith("https://"):
        return endpoint.rstrip("/") + "/.default"
    return ARM_SCOPE  # loopback stand-ins


def is_resource_path(path: str) -> bool:
    return bool(_RESOURCE_PATH.match(path or ""))


def default_credential(error: type[ArmError] = ArmError):
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:  # pragma: no cover - azure-identity is a dependency
        raise error("azure-identity is not installed: pip install azure-identity.") from None
    return DefaultAzureCredential()


class ArmClient:
    """GET and list Microsoft.Network resources. `error` is the exception class raised (a subclass of
    ArmError), `hint` ends the sentence of a failure that did not come from Azure's answer."""

    def __init__(self, credential=None, endpoint: str = ARM_ENDPOINT, *, scope: str | None = None,
                 retry_total: int = 3, retry_backoff_factor: float = 0.8, timeout: float = 30.0,
                 error: type[ArmError] = ArmError, hint: str = "", sdk_moniker: str = "egresslens-arm") -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import (BearerTokenCredentialPolicy, HeadersPolicy, HttpLoggingPolicy,
                                                  RetryPolicy, UserAgentPolicy)

        self.endpoint = endpoint.rstrip("/")
        self.insecure = self.endpoint.startswith("http://")
        self.error, self.hint = error, hint
        credential = credential if credential is not None else default_credential(error)
        policies = [
            HeadersPolicy({"Accept": "application/json"}),
            UserAgentPolicy(sdk_moniker=sdk_moniker),
            RetryPolicy(retry_total=retry_total, retry_backoff_factor=retry_backoff_factor, retry_backoff_max=30),
            BearerTokenCredentialPolicy(credential, scope or scope_for(self.endpoint)),
            HttpLoggingPolicy(),  # redacts Authorization
        ]
        self.client = PipelineClient(base_url=self.endpoint, policies=policies)
        self.timeout = timeout
        self.requests = 0

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "ArmClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, url: str, what: str, params: dict[str, str] | None):
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
        from azure.core.rest import HttpRequest

        from egresslens.sources.azure_errors import cause

        kwargs: dict[str, Any] = {"connection_timeout": self.timeout, "read_timeout": self.timeout}
        if self.insecure:
            kwargs["enforce_https"] = False
        self.requests += 1
        try:
            return self.client.send_request(HttpRequest("GET", url, params=params), **kwargs)
        except ClientAuthenticationError as exc:
            raise self.error(
                f"No usable Azure credential to read the {what}: sign in with `az login`, or set AZURE_TENANT_ID, "
                f"AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or use a managed / workload identity) ({cause(exc)}).") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self.error(f"Azure Resource Manager at {self.endpoint} did not answer reading the {what} "
                             f"({cause(exc)}); check --arm-endpoint and the network{self.hint}.") from None

    def _check(self, resp, what: str, ref: str) -> dict[str, Any]:
        status = resp.status_code
        if status in (401, 403):
            raise self.error(
                f"Azure Resource Manager refused to read the {what} ({status}): the signed-in identity needs the "
                f"Reader role on it (or its resource group){' and a fresh sign-in (az login)' if status == 401 else ''}.")
        if status == 404:
            err = self.error(f"The {what} {ref} was not found (404): check the id, the subscription "
                             "and --arm-endpoint for sovereign clouds.")
            err.status = 404
            raise err
        if status == 429:
            wait = resp.headers.get("Retry-After")
            raise self.error(f"Azure Resource Manager is throttling this identity (429) reading the {what}"
                             + (f" and asks to wait {wait} s" if wait else "")
                             + ": run again later, or less often.")
        if status >= 400:
            raise self.error(f"Azure Resource Manager answered {status} reading the {what} {ref}{_arm_message(resp)}.")
        try:
            doc = resp.json()
        except ValueError:
            raise self.error(f"Azure Resource Manager returned no JSON for the {what} {ref}.") from None
        if not isinstance(doc, dict):
            raise self.error(f"Azure Resource Manager returned an unexpected body for the {what}.")
        return doc

    def get(self, resource_id: str, what: str, api_version: str = API_VERSION) -> dict[str, Any]:
        """One resource by id."""
        if not is_resource_path(resource_id):
            raise self.error(f"Unexpected {what} id {resource_id!r}: not a Microsoft.Network resource id.")
        resp = self._send(f"{self.endpoint}{resource_id}", what, {"api-version": api_version})
        return self._check(resp, what, resource_id)

    def list(self, collection_path: str, what: str, api_version: str = API_VERSION) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following `nextLink` (only on this endpoint: the token never
        leaves it)."""
        if not is_resource_path(collection_path):
            raise self.error(f"Unexpected {what} path {collection_path!r}.")
        url, params = f"{self.endpoint}{collection_path}", {"api-version": api_version}
        for _ in range(MAX_PAGES):
            doc = self._check(self._send(url, what, params), what, collection_path)
            items = doc.get("value")
            if not isinstance(items, list):
                raise self.error(f"Azure Resource Manager returned no list for the {what}.")
            yield from (i for i in items if isinstance(i, dict))
            nxt = doc.get("nextLink")
            if not nxt:
                return
            parsed, mine = urlparse(str(nxt)), urlparse(self.endpoint)
            if (parsed.scheme, parsed.netloc) != (mine.scheme, mine.netloc):
                raise self.error(f"Azure Resource Manager sent a next page on another host ({parsed.netloc}) "
                                 f"for the {what}: not followed.")
            url, params = str(nxt), None  # nextLink carries its own api-version and skip token
        raise self.error(f"more than {MAX_PAGES} pages listing the {what}: stopped.")


def _arm_message(resp) -> str:
    try:
        err = resp.json().get("error") or {}
        msg = err.get("message") or err.get("code")
        return f": {str(msg).splitlines()[0]}" if msg else ""
    except Exception:
        return ""
