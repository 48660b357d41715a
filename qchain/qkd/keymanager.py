"""The link model of the simulated key manager, without any I/O.

`KeyManager` holds every SAE and every link of a devnet and answers the three ETSI GS
QKD 014 operations for a caller it has already identified. The HTTP server
(`qchain.qkd.kms`) and the in-process source (`qchain.qkd.simsource`) both wrap one, so
they share one model:

- A link joins two SAEs. Its pool holds key material measured in bits: it grows at
  `bits_per_second` (read from the injected clock, so a test moves time by hand) up to
  `max_key_count * key_size` bits; generation pauses while the pool is full. Either SAE
  can be master: `enc_keys` takes `number * size` bits from the pool, makes `number`
  keys and keeps a copy for the slave.
- The slave gets each key once with `dec_keys`; the copy is then wiped and forgotten. At
  most `max_key_count` delivered keys wait for their slave per direction; beyond that the
  oldest is dropped (counted as `expired`).
- Faults, set through the admin endpoint: `outage` answers every request on the link
  with "unavailable"; `eavesdropper` flushes the stored pool and stops generation until
  cleared; `set_rate` changes the rate from now on.

Errors are the typed `KeySourceError`s; the HTTP layer maps them to 400/401/503.
Delivery latency is applied by the wrappers, not here.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from qchain.hashing import Domain, hash_domain
from qchain.qkd.clock import Clock
from qchain.qkd.errors import KeyBadRequest, KeyExhausted, KeyUnauthorised, KeyUnavailable
from qchain.qkd.lease import Lease
from qchain.qkd.source import Key, KeyId, LinkStatus, key_id_str
from qchain.store.kv import KVStore

PROFILES: dict[str, int] = {
    "lab": 20_000_000,
    "metro": 300_000,
    "long-haul": 10_000,
    "constrained": 1_000,
}
"""Key rates in bits/s named after published figures: laboratory links reach tens of
Mbit/s, metropolitan fibre (tens of km) some hundreds of kbit/s, long-haul trusted-node
spans around 10 kbit/s, and lossy or free-space links around 1 kbit/s."""


@dataclass(frozen=True)
class LinkConfig:
    """One link between two SAEs. Sizes are in bits."""

    saes: tuple[str, str]
    bits_per_second: int
    key_size: int = 256
    min_key_size: int = 64
    max_key_size: int = 1024
    max_key_count: int = 10_000
    max_key_per_request: int = 128
    latency: float = 0.0
    """Seconds added to every answer on this link."""
    initial_key_count: int = 0
    """Keys of `key_size` stored when the manager starts."""

    def __post_init__(self) -> None:
        a, b = self.saes
        if a == b:
            raise ValueError(f"link {a}~{b} joins an SAE to itself")
        if self.bits_per_second < 0:
            raise ValueError("bits_per_second is negative")
        if not 8 <= self.min_key_size <= self.key_size <= self.max_key_size:
            raise ValueError("need 8 <= min_key_size <= key_size <= max_key_size")
        if any(s % 8 for s in (self.min_key_size, self.key_size, self.max_key_size)):
            raise ValueError("key sizes are whole bytes (multiples of 8 bits)")
        if self.max_key_count < 1 or self.max_key_per_request < 1:
            raise ValueError("max_key_count and max_key_per_request are at least 1")
        if not 0 <= self.initial_key_count <= self.max_key_count:
            raise ValueError("initial_key_count is outside [0, max_key_count]")
        if self.latency < 0:
            raise ValueError("latency is negative")

    @property
    def name(self) -> str:
        return link_name(*self.saes)


def link_name(a: str, b: str) -> str:
    """The name of the (undirected) link between two SAEs."""
    lo, hi = sorted((a, b))
    return f"{lo}~{hi}"


SAE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
"""What an SAE id added at run time may be (the devnet's rule, `devnet.kme`)."""
MAX_LINKS = 4096
"""Links one manager holds at most (a full mesh of 90 validators is 4005)."""


class KeyFactory(Protocol):
    def new_key(self, link: str, nbytes: int) -> tuple[KeyId, bytearray]:
        """A new key id and `nbytes` of key material for `link`."""


class RandomKeyFactory:
    """Random ids (UUID version 4) and material from the operating system."""

    def new_key(self, link: str, nbytes: int) -> tuple[KeyId, bytearray]:
        return uuid.uuid4().bytes, bytearray(os.urandom(nbytes))


class SeededKeyFactory:
    """Ids and material derived from a seed and a per-link counter, so a simulation is
    reproducible. The counter is a `Lease` when a store is given, so a restart with the
    same seed never derives a key twice."""

    def __init__(self, seed: bytes, store: KVStore | None = None, lease_block: int = 4096):
        self._seed = seed
        self._store = store
        self._lease_block = lease_block
        self._leases: dict[str, Lease] = {}
        self._counters: dict[str, int] = {}

    def _next(self, link: str) -> int:
        if self._store is None:
            n = self._counters.get(link, 0)
            self._counters[link] = n + 1
            return n
        lease = self._leases.get(link)
        if lease is None:
            lease = Lease(self._store, f"sim/{link}", self._lease_block)
            self._leases[link] = lease
        return lease.next()

    def new_key(self, link: str, nbytes: int) -> tuple[KeyId, bytearray]:
        n = self._next(link)
        base = self._seed + b"\x00" + link.encode() + b"\x00" + n.to_bytes(8, "big")
        raw_id = bytearray(hash_domain(Domain.QKD_SIM_KEY_ID, base)[:16])
        raw_id[6] = (raw_id[6] & 0x0F) | 0x40
        raw_id[8] = (raw_id[8] & 0x3F) | 0x80
        material = bytearray()
        block = 0
        while len(material) < nbytes:
            material += hash_domain(Domain.QKD_SIM_KEY, base + block.to_bytes(4, "big"))
            block += 1
        del material[nbytes:]
        return bytes(raw_id), material


@dataclass
class LinkCounters:
    """What happened on one link since the manager started."""

    generated_bits: int = 0
    enc_requests: int = 0
    dec_requests: int = 0
    keys_to_master: int = 0
    keys_to_slave: int = 0
    bits_delivered: int = 0
    unavailable: int = 0
    bad_requests: int = 0
    flushed_bits: int = 0
    expired: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Link:
    config: LinkConfig
    rate: int
    last: float
    stored_bits: int
    credit: float = 0.0
    outage: bool = False
    eavesdropper: bool = False
    pending: dict[tuple[str, str], OrderedDict[KeyId, bytearray]] = field(default_factory=dict)
    counters: LinkCounters = field(default_factory=LinkCounters)

    @property
    def cap_bits(self) -> int:
        return self.config.max_key_count * self.config.key_size


class KeyManager:
    """Every link of a devnet and the ETSI operations on them."""

    def __init__(
        self,
        links: Iterable[LinkConfig],
        clock: Clock,
        *,
        kme_ids: dict[str, str] | None = None,
        factory: KeyFactory | None = None,
    ) -> None:
        self.clock = clock
        self._factory: KeyFactory = factory or RandomKeyFactory()
        self._links: dict[str, _Link] = {}
        now = clock.now()
        for cfg in links:
            if cfg.name in self._links:
                raise ValueError(f"link {cfg.name} is configured twice")
            self._links[cfg.name] = _Link(
                config=cfg,
                rate=cfg.bits_per_second,
                last=now,
                stored_bits=cfg.initial_key_count * cfg.key_size,
            )
        self.saes: frozenset[str] = frozenset(
            s for lk in self._links.values() for s in lk.config.saes
        )
        self._kme_ids = dict(kme_ids or {})

    # --- lookups -------------------------------------------------------------------------

    def kme_id(self, sae: str) -> str:
        return self._kme_ids.get(sae, f"KME-{sae}")

    def link_config(self, a: str, b: str) -> LinkConfig:
        return self._get(a, b).config

    def latency(self, a: str, b: str) -> float:
        """The delivery latency of the link between a and b (0 if there is none)."""
        link = self._links.get(link_name(a, b))
        return 0.0 if link is None else link.config.latency

    def link_names(self) -> list[str]:
        return sorted(self._links)

    def _get(self, a: str, b: str) -> _Link:
        link = self._links.get(link_name(a, b))
        if link is None:
            raise KeyError(link_name(a, b))
        return link

    def _authorise(self, caller: str, other: str, role: str) -> _Link:
        if caller not in self.saes:
            raise KeyUnauthorised(f"SAE {caller!r} is not known to this key manager")
        if other not in self.saes:
            raise KeyBadRequest(f"{role}_SAE_ID {other!r} is not known to this key manager")
        link = self._links.get(link_name(caller, other))
        if link is None:
            raise KeyUnauthorised(f"SAE {caller!r} has no link to {other!r}")
        return link

    # --- the model -----------------------------------------------------------------------

    def _advance(self, link: _Link) -> None:
        now = self.clock.now()
        dt = max(0.0, now - link.last)
        link.last = now
        if link.eavesdropper or link.rate == 0:
            return
        link.credit += link.rate * dt
        new_bits = int(link.credit)
        link.credit -= new_bits
        room = link.cap_bits - link.stored_bits
        if new_bits >= room:
            new_bits = room
            link.credit = 0.0
        link.stored_bits += new_bits
        link.counters.generated_bits += new_bits

    def _check_up(self, link: _Link) -> None:
        if link.outage:
            link.counters.unavailable += 1
            raise KeyUnavailable(
                f"link {link.config.name} is down (simulated outage)",
                ({"reason": "outage", "link": link.config.name},),
            )

    def status(self, caller: str, slave: str) -> LinkStatus:
        link = self._authorise(caller, slave, "slave")
        self._check_up(link)
        self._advance(link)
        cfg = link.config
        return LinkStatus(
            source_kme_id=self.kme_id(caller),
            target_kme_id=self.kme_id(slave),
            master_sae_id=caller,
            slave_sae_id=slave,
            key_size=cfg.key_size,
            stored_key_count=link.stored_bits // cfg.key_size,
            max_key_count=cfg.max_key_count,
            max_key_per_request=cfg.max_key_per_request,
            max_key_size=cfg.max_key_size,
            min_key_size=cfg.min_key_size,
            max_sae_id_count=0,
            bits_per_second=link.rate,
        )

    def enc_keys(self, caller: str, slave: str, number: int, size: int | None) -> list[Key]:
        """`number` keys of `size` bits for caller (master) -> slave."""
        link = self._authorise(caller, slave, "slave")
        cfg = link.config
        link.counters.enc_requests += 1
        size = cfg.key_size if size is None else size
        problems: list[dict[str, object]] = []
        if not 1 <= number <= cfg.max_key_per_request:
            problems.append({"number": number, "max_key_per_request": cfg.max_key_per_request})
        if size % 8 or not cfg.min_key_size <= size <= cfg.max_key_size:
            problems.append(
                {"size": size, "min_key_size": cfg.min_key_size, "max_key_size": cfg.max_key_size}
            )
        if problems:
            link.counters.bad_requests += 1
            raise KeyBadRequest("number or size outside the link's limits", tuple(problems))
        self._check_up(link)
        if link.eavesdropper:
            link.counters.unavailable += 1
            raise KeyUnavailable(
                f"link {cfg.name} halted: eavesdropping detected, no key is generated",
                ({"reason": "eavesdropper", "link": cfg.name},),
            )
        self._advance(link)
        need = number * size
        if link.stored_bits < need:
            link.counters.unavailable += 1
            raise KeyExhausted(stored=link.stored_bits // size, requested=number)
        link.stored_bits -= need
        pending = link.pending.setdefault((caller, slave), OrderedDict())
        keys = []
        for _ in range(number):
            key_id, material = self._factory.new_key(cfg.name, size // 8)
            pending[key_id] = bytearray(material)
            keys.append(Key(key_id, material))
        while len(pending) > cfg.max_key_count:
            _, dropped = pending.popitem(last=False)
            dropped[:] = bytes(len(dropped))
            link.counters.expired += 1
        link.counters.keys_to_master += number
        link.counters.bits_delivered += need
        return keys

    def dec_keys(self, caller: str, master: str, key_ids: Sequence[KeyId]) -> list[Key]:
        """The keys master took toward caller (the slave); each is handed out once."""
        link = self._authorise(caller, master, "master")
        cfg = link.config
        link.counters.dec_requests += 1
        if not 1 <= len(key_ids) <= cfg.max_key_per_request:
            link.counters.bad_requests += 1
            raise KeyBadRequest(
                "key_IDs must list between 1 and max_key_per_request ids",
                ({"count": len(key_ids), "max_key_per_request": cfg.max_key_per_request},),
            )
        self._check_up(link)
        pending = link.pending.get((master, caller), OrderedDict())
        unknown = [k for k in key_ids if k not in pending]
        if unknown or len(set(key_ids)) != len(key_ids):
            link.counters.bad_requests += 1
            raise KeyBadRequest(
                "unknown, already delivered or repeated key_ID",
                tuple({"key_ID": key_id_str(k)} for k in unknown[:16]),
            )
        keys = [Key(k, pending.pop(k)) for k in key_ids]
        link.counters.keys_to_slave += len(keys)
        return keys

    # --- admin ---------------------------------------------------------------------------

    def add_link(self, cfg: LinkConfig) -> None:
        """A new link between two SAEs at run time (a validator joins, CONSENSUS.md §10.6);
        an SAE named for the first time becomes known. Refused (ValueError) if the link
        exists, if an SAE id is malformed, or if the manager holds `MAX_LINKS` already."""
        for sae in cfg.saes:
            if not SAE_ID.match(sae):
                raise ValueError(f"SAE id {sae!r}: 1 to 64 characters of A-Z a-z 0-9 . _ : -")
        if cfg.name in self._links:
            raise ValueError(f"link {cfg.name} exists")
        if len(self._links) >= MAX_LINKS:
            raise ValueError(f"this key manager holds {MAX_LINKS} links already")
        self._links[cfg.name] = _Link(
            config=cfg,
            rate=cfg.bits_per_second,
            last=self.clock.now(),
            stored_bits=cfg.initial_key_count * cfg.key_size,
        )
        self.saes = self.saes | set(cfg.saes)

    def add_link_like(self, a: str, b: str, bits_per_second: int | None = None) -> None:
        """A new link a~b at run time whose parameters are those of an existing link of
        either SAE (else of the first link), its rate the one given, if any: what the key
        manager's `PUT /admin/links/{a}/{b}` does. ValueError as `add_link`, or if the
        manager has no link to copy from."""
        names = self.link_names()
        if not names:
            raise ValueError("this key manager has no link to copy parameters from")
        like = next((n for n in names if a in n.split("~") or b in n.split("~")), names[0])
        base = self.link_config(*like.split("~", 1))
        rate = base.bits_per_second if bits_per_second is None else bits_per_second
        self.add_link(replace(base, saes=(a, b), bits_per_second=rate))

    def drop_link(self, a: str, b: str) -> None:
        """Remove the link a~b (a validator left, §10.6): its stored keys and the keys
        waiting for the slave are gone, and an SAE left without a link is no longer known
        (its requests are refused as an unknown SAE's). KeyError if there is no such link."""
        link = self._get(a, b)
        for pending in link.pending.values():
            for material in pending.values():
                material[:] = bytes(len(material))
        del self._links[link.config.name]
        self.saes = frozenset(s for lk in self._links.values() for s in lk.config.saes)

    def set_rate(self, a: str, b: str, bits_per_second: int) -> None:
        if bits_per_second < 0:
            raise ValueError("bits_per_second is negative")
        link = self._get(a, b)
        self._advance(link)
        link.rate = bits_per_second

    def set_outage(self, a: str, b: str, active: bool) -> None:
        self._get(a, b).outage = active

    def set_eavesdropper(self, a: str, b: str, active: bool) -> None:
        link = self._get(a, b)
        self._advance(link)
        if active:
            link.counters.flushed_bits += link.stored_bits
            link.stored_bits = 0
            link.credit = 0.0
        link.eavesdropper = active

    def link_report(self, a: str, b: str) -> dict[str, object]:
        """Counters and state of one link."""
        link = self._get(a, b)
        self._advance(link)
        cfg = link.config
        return {
            "link": cfg.name,
            "saes": list(cfg.saes),
            "bits_per_second": link.rate,
            "stored_key_count": link.stored_bits // cfg.key_size,
            "max_key_count": cfg.max_key_count,
            "awaiting_slave": sum(len(p) for p in link.pending.values()),
            "outage": link.outage,
            "eavesdropper": link.eavesdropper,
            "counters": link.counters.to_json(),
        }
