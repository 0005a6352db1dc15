"""A loopback stand-in for Azure Resource Manager's Microsoft.Network reads.

A real `http.server` on 127.0.0.1: GET of a resource by id answers its body; GET of a child
collection (`.../ruleCollectionGroups`) answers `{"value": [...], "nextLink": ...}` pages of
`page_size` items (the next page's URL carries `$skipToken`, as ARM's does). It checks the bearer
token and the api-version, and can answer 429 with `Retry-After` (a number of times, or always),
403 and 404 for chosen paths. Bodies come from `tests/fixtures/arm/`: the response shapes
Microsoft publishes, with ids renamed when a test builds an estate out of them.
"""

from __future__ import annotations

import copy
import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "arm"
TOKEN = "fake-arm-token-estate-0123456789"
API_VERSION = "2024-05-01"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def renamed(doc: dict, **replace: str) -> dict:
    """A deep copy of a published body with strings replaced (ids and names), e.g. policy1 -> fwp-weu."""
    text = json.dumps(copy.deepcopy(doc))
    for old, new in replace.items():
        text = text.replace(old, new)
    return json.loads(text)


class FakeCredential:
    def __init__(self, token: str = TOKEN, fail: bool = False) -> None:
        self.token, self.fail, self.scopes = token, fail, []

    def get_token(self, *scopes, **kwargs):
        self.scopes.extend(scopes)
        if self.fail:
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")
        return AccessToken(self.token, int(datetime.now().timestamp()) + 3600)


class ArmServer:
    def __init__(self, page_size: int = 2) -> None:
        self.resources: dict[str, dict] = {}  # lower-case id -> body
        self.collections: dict[str, list[dict]] = {}  # lower-case collection path -> items
        self.status: dict[str, int] = {}  # lower-case path -> forced status
        self.throttle: dict[str, int] = {}  # lower-case path -> 429s before success (-1: always)
        self.retry_after = "1"
        self.foreign_next_link = False
        self.page_size = page_size
        self.requests: list[dict] = []
        self.endpoint = ""

    def add(self, body: dict) -> None:
        self.resources[body["id"].lower()] = body

    def add_groups(self, policy_id: str, groups: list[dict]) -> None:
        self.collections[f"{policy_id}/ruleCollectionGroups".lower()] = groups

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    def start(self) -> "ArmServer":
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict | None, headers: dict | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                path = url.path.rstrip("/").lower()
                query = parse_qs(url.query)
                state.requests.append({"path": url.path, "query": query, "auth": self.headers.get("Authorization")})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"error": {"code": "AuthenticationFailed", "message": "bad token"}})
                if query.get("api-version") != [API_VERSION]:
                    return self._send(400, {"error": {"code": "InvalidApiVersionParameter", "message": "api-version"}})
                left = state.throttle.get(path, 0)
                if left:
                    state.throttle[path] = left - 1 if left > 0 else left
                    return self._send(429, {"error": {"code": "TooManyRequests", "message": "throttled"}},
                                      {"Retry-After": state.retry_after})
                if path in state.status:
                    code = state.status[path]
                    name = {403: "AuthorizationFailed", 404: "ResourceNotFound"}.get(code, "Error")
                    return self._send(code, {"error": {"code": name, "message": f"{name} for {url.path}"}})
                if path in state.collections:
                    items = state.collections[path]
                    skip = int((query.get("$skipToken") or ["0"])[0])
                    page = items[skip:skip + state.page_size]
                    body: dict = {"value": page}
                    if skip + state.page_size < len(items):
                        host = "https://elsewhere.example" if state.foreign_next_link else state.endpoint
                        body["nextLink"] = (f"{host}{url.path}?" + urlencode(
                            {"api-version": API_VERSION, "$skipToken": skip + state.page_size}))
                    return self._send(200, body)
                doc = state.resources.get(path)
                if doc is None:
                    return self._send(404, {"error": {"code": "ResourceNotFound", "message": f"{url.path} not found"}})
                return self._send(200, doc)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
