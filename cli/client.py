"""Talk to the Taskrelay API over HTTP, and turn what can go wrong into one sentence a person can act on.

    CliError                 exit 1: the command cannot do what was asked
    ├── ApiRefused           exit 1: a 4xx/5xx answer, with the API's own message (unknown id, bad filter)
    ├── ApiUnreachable       exit 2: nothing answers at TASKRELAY_URL, or what answers is not Taskrelay's API
    └── NotAuthorized        exit 2: no key, a wrong or revoked one (401), or one without the scope (403)

Standard library only (urllib), so the command has nothing to install beyond click and rich.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "http://127.0.0.1:5000"
"""Where the API is when TASKRELAY_URL is not set: `make run` and `make api`."""
TIMEOUT_S = 15.0
"""How long one request may take, seconds (a cancel of a running task answers within ~2.5 s)."""


class CliError(Exception):
    """Something the command cannot do; its message is the one sentence printed on stderr."""

    exit_code = 1


class ApiRefused(CliError):
    """The API answered with an error status; the message is the API's."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        self.status = status
        self.body = body
        super().__init__(message)


class ApiUnreachable(CliError):
    """Nothing answers at TASKRELAY_URL (refused, timed out, unknown host)."""

    exit_code = 2


class NotAuthorized(CliError):
    """The API refused the key: missing, unknown, revoked (401) or lacking the scope (403)."""

    exit_code = 2


@dataclass(frozen=True)
class Client:
    """The API at `url`, called with `api_key` in X-API-Key (none: no header)."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout_s: float = TIMEOUT_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Client:
        """Read TASKRELAY_URL (default http://127.0.0.1:5000) and TASKRELAY_API_KEY."""
        url = (environ.get("TASKRELAY_URL") or DEFAULT_URL).rstrip("/")
        return cls(url=url, api_key=(environ.get("TASKRELAY_API_KEY") or "").strip() or None)

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def request(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return the decoded JSON answer; raise a CliError for anything but 2xx."""
        status, answer = self.send(method, path, body, query)
        if status >= 400:
            raise self._refusal(status, answer)
        if not isinstance(answer, dict):
            raise ApiUnreachable(
                f"{self.url}{path} answered {status} without a JSON object: is TASKRELAY_URL the Taskrelay API?"
            )
        return answer

    def send(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON or None). Raise ApiUnreachable if nothing answers."""
        kept = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + (f"?{urllib.parse.urlencode(kept)}" if kept else "")
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 (any scheme the user sets)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, TLS, a garbled answer
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(
                f"cannot reach the Taskrelay API at {self.url} ({reason}); is it running, and is TASKRELAY_URL right?"
            ) from None

    def _refusal(self, status: int, answer: Any) -> CliError:
        message = answer.get("message") if isinstance(answer, dict) else None
        if status == 401:
            why = (
                "no key was sent: set TASKRELAY_API_KEY" if not self.api_key else "set TASKRELAY_API_KEY to a valid key"
            )
            return NotAuthorized(f"the API at {self.url} refused the API key (401); {why}")
        if status == 403:
            scope = answer.get("scope_needed") if isinstance(answer, dict) else None
            if scope:
                return NotAuthorized(f"the API key may not do this (403): it needs the {scope} scope")
            return NotAuthorized(f"{self.url} refused the request (403): {message or 'forbidden'}")
        return ApiRefused(status, f"{message or 'the API answered an error'} ({status})", answer)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
