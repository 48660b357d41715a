"""`qchain kms probe`: check a vendor's key manager (KME) against ETSI GS QKD 014 and
against what a qchain node needs, before a partner joins.

The probe speaks raw HTTP (its own small aiohttp calls, not the node's client) so it
reports what the KME itself does. It acts as the partner's SAE (the master) and as the
peer SAE (the slave, for `dec_keys`), and, if given, as a third SAE that must not get
the peer's keys. Each check yields a `Check`: what the KME did, what the standard says,
and a verdict:

- `ok`: as the standard says;
- `deviation`: not as the standard says, but a node runs (maybe with a setting, named in
  `ProbeReport.settings`);
- `blocker`: a node cannot run on this KME (no 256-bit keys, a key handed out twice, an
  answer the node's client refuses, ...);
- `skipped`: not run (no credentials for it, or exhaustion without `allow_exhaust`).

What the node's client copes with is written down once, in `NodeTolerance`; its defaults
describe `qchain.qkd.client.ETSIClient` as the node builds it (every Status field typed
as the standard says; 401 and 403 are configuration errors; every other answer, a short
batch included, is transient: the client uses what came, backs off and retries).

The probe spends a few keys of the link; with `allow_exhaust` it takes every stored key.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp

from qchain.qkd.source import MAC_KEY_BITS

SAE_HEADER = "X-SAE-ID"
NODE_BATCH = 64
"""The node's default `qkd.batch_keys`."""
MAX_EXHAUST_CALLS = 2000

STATUS_FIELDS: dict[str, type] = {
    "source_KME_ID": str,
    "target_KME_ID": str,
    "master_SAE_ID": str,
    "slave_SAE_ID": str,
    "key_size": int,
    "stored_key_count": int,
    "max_key_count": int,
    "max_key_per_request": int,
    "max_key_size": int,
    "min_key_size": int,
    "max_SAE_ID_count": int,
}


class Verdict(StrEnum):
    OK = "ok"
    DEVIATION = "deviation"
    BLOCKER = "blocker"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    name: str
    observed: str
    """What the KME did."""
    spec: str
    """What ETSI GS QKD 014 (or the node) expects."""
    verdict: Verdict


@dataclass(frozen=True)
class NodeTolerance:
    """What the node's ETSI client accepts. Keep in step with `qchain.qkd.errors.classify`
    and `qchain.qkd.client.HTTP_ERRORS`."""

    config_statuses: frozenset[int] = frozenset({401, 403})
    """Statuses the client reads as a configuration error: the link waits, retried every
    30 s, until the operator fixes it. Every other status is transient: back off, retry."""


@dataclass(frozen=True)
class Credentials:
    """How one SAE identifies itself: a client certificate, or (dev key managers only)
    the `X-SAE-ID` header when `cert` is None."""

    sae_id: str
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class ProbeConfig:
    kme: str
    """Base URL of the KME, e.g. https://kme.example:443."""
    me: Credentials
    """The partner's own SAE (the master)."""
    peer: Credentials
    """The peer SAE (the slave)."""
    third: Credentials | None = None
    """An SAE that is neither master nor slave of the probed keys."""
    ca: Path | None = None
    """The CA that signed the KME's certificate (None: the system's)."""
    allow_exhaust: bool = False
    timeout: float = 5.0
    """Seconds per request."""
    slow_ms: float = 1000.0
    """Answers slower than this are a deviation (the node's client waits 5 s)."""
    node: NodeTolerance = NodeTolerance()


@dataclass
class ProbeReport:
    checks: list[Check] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)
    """Node settings (or client duties) this KME needs."""

    def add(self, name: str, observed: str, spec: str, verdict: Verdict) -> None:
        self.checks.append(Check(name, observed, spec, verdict))

    def need(self, setting: str) -> None:
        if setting not in self.settings:
            self.settings.append(setting)

    @property
    def runs(self) -> bool:
        """Whether a qchain node can run on this KME."""
        return not any(c.verdict is Verdict.BLOCKER for c in self.checks)

    def verdict_line(self) -> str:
        if not self.runs:
            blockers = ", ".join(c.name for c in self.checks if c.verdict is Verdict.BLOCKER)
            return f"qchain does NOT run on this KME: blocked by {blockers}"
        if not self.settings:
            return "qchain runs on this KME: default settings"
        return f"qchain runs on this KME: {'; '.join(self.settings)}"

    def to_json(self) -> dict[str, object]:
        return {
            "checks": [
                {"check": c.name, "observed": c.observed, "spec": c.spec, "verdict": c.verdict}
                for c in self.checks
            ],
            "settings": list(self.settings),
            "runs": self.runs,
            "verdict": self.verdict_line(),
        }

    def table(self) -> str:
        """The report as a plain-text table and the verdict line."""
        head = ("check", "what the KME did", "what the spec says", "verdict")
        rows = [head, *((c.name, c.observed, c.spec, str(c.verdict)) for c in self.checks)]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join([*lines, "", self.verdict_line()])


@dataclass(frozen=True)
class Answer:
    status: int
    """The HTTP status; 0 when no answer came (the error is in `error`)."""
    body: Any
    ms: float
    error: str = ""

    def describe(self) -> str:
        if self.status == 0:
            return f"no answer ({self.error})"
        message = self.body.get("message") if isinstance(self.body, dict) else None
        return f"{self.status} {message}" if message else str(self.status)


class _SAE:
    """One SAE's HTTP session to the KME."""

    def __init__(self, cfg: ProbeConfig, cred: Credentials) -> None:
        self.sae_id = cred.sae_id
        self._base = cfg.kme.rstrip("/")
        ctx: ssl.SSLContext | bool = False  # plain HTTP, or an unverified dev KME
        headers: dict[str, str] = {}
        if cred.cert is None or cred.key is None:
            headers[SAE_HEADER] = cred.sae_id
        if not headers or cfg.ca is not None:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=None if cfg.ca is None else str(cfg.ca)
            )
            if cred.cert is not None and cred.key is not None:
                context.load_cert_chain(str(cred.cert), str(cred.key))
            ctx = context
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=cfg.timeout),
        )

    async def call(
        self, method: str, path: str, *, body: object = None, params: Any = None
    ) -> Answer:
        start = time.monotonic()
        try:
            async with self._http.request(
                method, f"{self._base}/api/v1/keys/{path}", json=body, params=params
            ) as resp:
                raw = await resp.read()
                try:
                    doc = json.loads(raw) if raw else None
                except ValueError:
                    doc = None
                return Answer(resp.status, doc, (time.monotonic() - start) * 1000)
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as e:
            return Answer(0, None, (time.monotonic() - start) * 1000, type(e).__name__)

    async def close(self) -> None:
        await self._http.close()


def parse_keys(answer: Answer) -> list[tuple[str, bytes]] | None:
    """The (key_ID, material) pairs of a 200 Key container; None if it is not one, or an
    id is not a UUID (a node keeps key ids as 16-byte UUIDs)."""
    if answer.status != 200 or not isinstance(answer.body, dict):
        return None
    items = answer.body.get("keys")
    if not isinstance(items, list):
        return None
    out = []
    for item in items:
        if not isinstance(item, dict):
            return None
        kid, material = item.get("key_ID"), item.get("key")
        if not isinstance(kid, str) or not isinstance(material, str):
            return None
        try:
            uuid.UUID(kid)
            out.append((kid, base64.b64decode(material, validate=True)))
        except ValueError:
            return None
    return out


_SEVERITY = (Verdict.SKIPPED, Verdict.OK, Verdict.DEVIATION, Verdict.BLOCKER)


def _n_keys(n: int, word: str = "key") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _refusal(answer: Answer) -> Verdict:
    """The verdict on an answer that should be a 400: keys are a blocker (a key handed out
    twice, or made up), another error a deviation."""
    if parse_keys(answer):
        return Verdict.BLOCKER
    return Verdict.OK if answer.status == 400 else Verdict.DEVIATION


def _ids(keys: list[tuple[str, bytes]]) -> dict[str, object]:
    return {"key_IDs": [{"key_ID": k} for k, _ in keys]}


class _Probe:
    def __init__(self, cfg: ProbeConfig, report: ProbeReport) -> None:
        self.cfg = cfg
        self.r = report
        self.me = _SAE(cfg, cfg.me)
        self.peer = _SAE(cfg, cfg.peer)
        self.third = None if cfg.third is None else _SAE(cfg, cfg.third)
        self.slave = cfg.peer.sae_id
        self.master = cfg.me.sae_id
        self.times: list[float] = []
        self.cap = 0
        self.stored = 0
        self.key_size = 0

    async def close(self) -> None:
        for sae in (self.me, self.peer, self.third):
            if sae is not None:
                await sae.close()

    async def call(self, sae: _SAE, method: str, path: str, **kw: Any) -> Answer:
        answer = await sae.call(method, path, **kw)
        if answer.status:
            self.times.append(answer.ms)
        return answer

    async def enc(self, method: str, number: int, size: int | None = None) -> Answer:
        path = f"{self.slave}/enc_keys"
        if method == "POST":
            body: dict[str, object] = {"number": number}
            if size is not None:
                body["size"] = size
            return await self.call(self.me, "POST", path, body=body)
        params = {"number": str(number)}
        if size is not None:
            params["size"] = str(size)
        return await self.call(self.me, "GET", path, params=params)

    async def dec(self, sae: _SAE, keys: list[tuple[str, bytes]], method: str) -> Answer:
        path = f"{self.master}/dec_keys"
        if method == "POST":
            return await self.call(sae, "POST", path, body=_ids(keys))
        return await self.call(sae, "GET", path, params=[("key_ID", k) for k, _ in keys])

    # --- the checks ----------------------------------------------------------------------

    async def status(self) -> bool:
        a = await self.call(self.me, "GET", f"{self.slave}/status")
        spec = "200 with the Status fields"
        if a.status != 200 or not isinstance(a.body, dict):
            self.r.add("status", a.describe(), spec, Verdict.BLOCKER)
            return False
        doc = a.body
        bad = [n for n, t in STATUS_FIELDS.items() if type(doc.get(n)) is not t]
        shown = ", ".join(
            f"{n}={doc.get(n)}"
            for n in (
                "key_size",
                "min_key_size",
                "max_key_size",
                "max_key_per_request",
                "max_key_count",
                "stored_key_count",
            )
        )
        if bad:
            seen = f"{shown}; missing or mistyped: {', '.join(bad)}"
            self.r.add("status", seen, spec + " (the node's client needs each)", Verdict.BLOCKER)
        else:
            self.r.add("status", shown, spec, Verdict.OK)
        ids = (doc.get("master_SAE_ID"), doc.get("slave_SAE_ID"))
        if ids != (self.master, self.slave):
            self.r.add(
                "status SAE ids",
                f"master_SAE_ID={ids[0]!r}, slave_SAE_ID={ids[1]!r}",
                f"the strings {self.master!r} and {self.slave!r}",
                Verdict.DEVIATION if all(isinstance(i, str) for i in ids) else Verdict.BLOCKER,
            )

        def num(name: str, default: int) -> int:
            v = doc.get(name)
            return v if type(v) is int and v > 0 else default

        self.cap = num("max_key_per_request", 0)
        self.stored = num("stored_key_count", 0)
        self.key_size = num("key_size", 0)
        lo, hi = num("min_key_size", 0), num("max_key_size", 0)
        fits = (lo and hi and lo <= MAC_KEY_BITS <= hi) or self.key_size == MAC_KEY_BITS
        self.r.add(
            "256-bit keys",
            f"key_size {self.key_size}, sizes {lo or '?'}..{hi or '?'}",
            "qchain needs 256-bit keys (key_size, or within min..max_key_size)",
            Verdict.OK if fits else Verdict.BLOCKER,
        )
        if self.cap and self.cap < NODE_BATCH:
            self.r.need(f"qkd.batch_keys <= {self.cap}")
            self.r.need(f"qkd.low_water <= {self.cap}")
        return True

    async def enc_and_dec(self) -> None:
        size = None if self.key_size == MAC_KEY_BITS else MAC_KEY_BITS
        got: dict[str, list[tuple[str, bytes]]] = {}
        for method, number in (("POST", 2), ("GET", 1)):
            name = f"enc_keys by {method}"
            a = await self.enc(method, number, size)
            keys = parse_keys(a)
            spec = f"200 with {_n_keys(number)}, UUID key_IDs, {MAC_KEY_BITS}-bit keys"
            needed = Verdict.BLOCKER if method == "POST" else Verdict.DEVIATION
            if keys is None:
                self.r.add(
                    name,
                    a.describe() if a.status != 200 else "not a Key container with UUID key_IDs",
                    spec,
                    needed,
                )
                continue
            sizes = sorted({len(m) * 8 for _, m in keys})
            seen = f"{_n_keys(len(keys))} of {'/'.join(map(str, sizes)) or '?'} bits"
            if sizes and sizes != [MAC_KEY_BITS]:
                self.r.add(name, seen, spec, needed)
            elif len(keys) != number:
                self.r.add(name, seen + " (partial batch)", spec, Verdict.DEVIATION)
            else:
                self.r.add(name, seen, spec, Verdict.OK)
            got[method] = keys
        if size is None:
            a = await self.enc("POST", 1)
            keys = parse_keys(a)
            seen = "no key" if not keys else f"{len(keys[0][1]) * 8} bits"
            self.r.add(
                "default key size",
                seen,
                f"a key of key_size ({self.key_size}) bits when size is left out",
                Verdict.OK if keys and len(keys[0][1]) * 8 == self.key_size else Verdict.DEVIATION,
            )
            got["default"] = keys or []
        post = got.get("POST", [])
        if post:
            a = await self.dec(self.peer, post, "POST")
            back = parse_keys(a)
            name = f"dec_keys by POST ({_n_keys(len(post), 'id')})"
            spec = "200 with the master's keys, in order"
            if back == post:
                self.r.add(name, "the same keys", spec, Verdict.OK)
            elif back is not None and sorted(back) == sorted(post):
                self.r.add(name, "the same keys in another order", spec, Verdict.DEVIATION)
            else:
                self.r.add(name, a.describe(), spec, Verdict.BLOCKER)
            if back is not None and sorted(back) == sorted(post):
                a = await self.dec(self.peer, post[:1], "POST")
                self.r.add(
                    "delivered key is gone",
                    "handed out again" if parse_keys(a) else a.describe(),
                    "a second dec_keys of the same key_ID fails (400)",
                    _refusal(a),
                )
        get = got.get("GET", [])
        if get:
            a = await self.dec(self.peer, get, "GET")
            same = parse_keys(a) == get
            self.r.add(
                "dec_keys by GET (1 id)",
                "the same key" if same else a.describe(),
                "200 with the master's key",
                Verdict.OK if same else Verdict.DEVIATION,
            )
        rest = got.get("default", [])
        if rest:
            await self.dec(self.peer, rest, "POST")

    async def unknown_key(self) -> None:
        a = await self.dec(self.peer, [(str(uuid.uuid4()), b"")], "POST")
        self.r.add("unknown key_ID", a.describe(), "400", _refusal(a))

    async def non_slave(self) -> None:
        name = "dec_keys by a non-slave SAE"
        spec = "refused (401 or 400); the key stays for its slave"
        if self.third is None:
            self.r.add(name, "no third SAE given", spec, Verdict.SKIPPED)
            return
        keys = parse_keys(await self.enc("POST", 1, MAC_KEY_BITS))
        if not keys:
            self.r.add(name, "could not get a key to try", spec, Verdict.SKIPPED)
            return
        a = await self.dec(self.third, keys, "POST")
        if parse_keys(a):
            self.r.add(name, "the third SAE got the key", spec, Verdict.BLOCKER)
            return
        kept = parse_keys(await self.dec(self.peer, keys, "POST")) == keys
        verdict = Verdict.OK if a.status in (400, 401) and kept else Verdict.DEVIATION
        seen = a.describe() + ("" if kept else "; the key was lost for its slave")
        self.r.add(name, seen, spec, verdict)

    async def batch_cap(self) -> None:
        name = "batch cap"
        if not self.cap:
            self.r.add(name, "no max_key_per_request", "status names the cap", Verdict.SKIPPED)
            return
        ask = self.cap + 1
        spec = f"400 for number {ask} > max_key_per_request {self.cap}"
        a = await self.enc("POST", ask, MAC_KEY_BITS)
        keys = parse_keys(a)
        if keys is None:
            verdict = Verdict.OK if a.status == 400 else Verdict.DEVIATION
            self.r.add(name, f"cap {self.cap}: {a.describe()}", spec, verdict)
            return
        await self.dec(self.peer, keys[: self.cap], "POST")
        if len(keys) < ask:
            seen = f"cap {self.cap}: {_n_keys(len(keys))} (partial batch)"
            self.r.add(name, seen, spec, Verdict.DEVIATION)  # the node never asks above the cap
        else:
            self.r.add(name, f"cap {self.cap}: all {ask} keys", spec, Verdict.DEVIATION)

    async def exhaustion(self) -> None:
        name = "exhaustion"
        spec = "503 when fewer keys are stored than asked"
        if not self.cfg.allow_exhaust:
            self.r.add(name, "not tried (--allow-exhaust)", spec, Verdict.SKIPPED)
            return
        number = max(1, self.cap)
        partial = False
        for _ in range(MAX_EXHAUST_CALLS):
            a = await self.enc("POST", number, MAC_KEY_BITS)
            keys = parse_keys(a)
            if keys is None:
                break
            partial = partial or 0 < len(keys) < number
        else:
            self.r.add(name, f"still keys after {MAX_EXHAUST_CALLS} calls", spec, Verdict.SKIPPED)
            return
        seen = a.describe() + ("; a partial batch first" if partial else "")
        if a.status in self.cfg.node.config_statuses:
            verdict = Verdict.BLOCKER
            seen += "; the node's client reads it as a configuration error"
        elif a.status != 503:
            verdict = Verdict.DEVIATION
            seen += "; the node's client backs off and retries"
        else:
            verdict = Verdict.OK
        if partial:
            verdict = max(verdict, Verdict.DEVIATION, key=_SEVERITY.index)
        self.r.add(name, seen, spec, verdict)

    def timing(self) -> None:
        if not self.times:
            return
        worst = max(self.times)
        median = sorted(self.times)[len(self.times) // 2]
        self.r.add(
            "answer time",
            f"median {median:.0f} ms, max {worst:.0f} ms",
            f"under the node's 5 s timeout (deviation: median over {self.cfg.slow_ms:.0f} ms)",
            Verdict.OK if median < self.cfg.slow_ms else Verdict.DEVIATION,
        )


async def run_probe(cfg: ProbeConfig) -> ProbeReport:
    """Run every check against the KME and return the report."""
    report = ProbeReport()
    probe = _Probe(cfg, report)
    try:
        if await probe.status():
            await probe.enc_and_dec()
            await probe.unknown_key()
            await probe.non_slave()
            await probe.batch_cap()
            await probe.exhaustion()
        probe.timing()
    finally:
        await probe.close()
    return report
