"""How devnet tooling talks HTTP to nodes and key managers: JSON requests with an
optional bearer token, a node's `/v1/status`, and polling until nodes are ready.

`http_json` is a plain GET that raises OSError (URLError and HTTPError included) or
ValueError; `http_call` is any JSON request and turns an HTTP error answer into a
`BackendError` carrying the server's answer. The CLI, the watch view, both network
flavours and the fault kit all go through these.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from devnet.running import BackendError


def http_json(url: str, timeout: float = 2.0, token: str | None = None) -> Any:
    """GET a JSON document; raises OSError (URLError included) or ValueError on failure."""
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_call(
    url: str,
    method: str = "GET",
    body: object = None,
    token: str | None = None,
    timeout: float = 5.0,
) -> Any:
    """One JSON request; raises BackendError with the server's answer on HTTP errors and
    OSError when the server cannot be reached."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raise BackendError(f"{method} {url}: HTTP {e.code}: {e.read()[:300]!r}") from e
    return json.loads(raw) if raw else None


def read_token(path: Path) -> str:
    """An admin bearer token as written by `devnet.network.write_network`."""
    return path.read_text().strip()


def _json_object(url: str, timeout: float) -> dict[str, Any] | None:
    """GET a JSON object, or None if the server does not answer with one."""
    try:
        doc = http_json(url, timeout)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def node_status(api_url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """A node's `/v1/status`, or None if it does not answer with a JSON object."""
    return _json_object(f"{api_url}/v1/status", timeout)


def node_qkd(api_url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """A node's `/v1/qkd`, or None if it does not answer with a JSON object."""
    return _json_object(f"{api_url}/v1/qkd", timeout)


def poll_ready(
    wanted: Iterable[str],
    status_of: Callable[[str], dict[str, Any] | None],
    min_height: int,
    timeout: float,
    dead: Callable[[list[str]], str | None],
    interval: float,
) -> dict[str, dict[str, Any]]:
    """Poll until every wanted node answers with height >= min_height; their statuses.
    `dead(missing)` names what has died (RuntimeError) or returns None. Raises
    TimeoutError naming the nodes that are not there."""
    names = list(wanted)
    deadline = time.monotonic() + timeout
    statuses: dict[str, dict[str, Any]] = {}
    while True:
        for name in names:
            st = status_of(name)
            if st is not None:
                statuses[name] = st
        missing = [
            n for n in names if n not in statuses or statuses[n].get("height", 0) < min_height
        ]
        if not missing:
            return statuses
        problem = dead(missing)
        if problem is not None:
            raise RuntimeError(problem)
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(missing)}")
        time.sleep(interval)
