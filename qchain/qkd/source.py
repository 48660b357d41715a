"""The key-source interface: where one-time keys come from.

A key source serves one local SAE (secure application entity: in qchain, one validator)
and speaks in the terms of ETSI GS QKD 014:

- `enc_keys(slave, number, size)`: "Get key". Fresh keys shared with `slave`; this side is
  the master. Used for the directed link me -> slave.
- `dec_keys(master, key_ids)`: "Get key with key IDs". The keys `master` took with
  `enc_keys` toward this SAE, looked up by their ids. The key manager hands each key to
  the slave once and then forgets it. Used for the directed link master -> me.
- `status(slave)`: "Get status". Pool level, limits and (as an extension) the link rate.

Key ids are UUIDs; inside qchain they travel as their 16 raw bytes (`KeyId`). Key
material lives in a `Key`, a `bytearray` that the user wipes (`Key.wipe`) as soon as the
key has served; `repr` never shows key bytes.

Implementations: `qchain.qkd.client.ETSIClient` (HTTP, the real protocol) and
`qchain.qkd.simsource.LocalKeySource` (in-process, deterministic). Both raise only the
typed `KeySourceError`s of `qchain.qkd.errors`.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qchain.qkd.errors import KeyBadRequest

KeyId = bytes
"""The 16 bytes of a key's UUID."""

KEY_ID_LEN = 16
MAC_KEY_BYTES = 32
MAC_KEY_BITS = MAC_KEY_BYTES * 8


def key_id_str(key_id: KeyId) -> str:
    """The standard text form of a key id (lower-case hyphenated UUID)."""
    return str(uuid.UUID(bytes=key_id))


def parse_key_id(text: object) -> KeyId:
    """The 16 bytes of a UUID given as text; `KeyBadRequest` for anything else."""
    if not isinstance(text, str) or len(text) > 64:
        raise KeyBadRequest("key_ID is not a UUID string", ({"key_ID": repr(text)[:80]},))
    try:
        return uuid.UUID(text).bytes
    except ValueError as e:
        raise KeyBadRequest("key_ID is not a UUID", ({"key_ID": text},)) from e


class Key:
    """One key: its id and its material, wiped in place after use."""

    __slots__ = ("_material", "key_id")

    def __init__(self, key_id: KeyId, material: bytearray) -> None:
        self.key_id = key_id
        self._material = material

    @property
    def material(self) -> bytearray:
        if self.wiped:
            raise ValueError("key material was wiped")
        return self._material

    @property
    def size_bytes(self) -> int:
        return len(self._material)

    @property
    def wiped(self) -> bool:
        return not self._material

    def wipe(self) -> None:
        """Overwrite the material with zeros and drop it."""
        m = self._material
        m[:] = bytes(len(m))
        m.clear()

    def __repr__(self) -> str:
        state = "wiped" if self.wiped else f"{len(self._material)} bytes"
        return f"Key({key_id_str(self.key_id)}, {state})"


@dataclass(frozen=True)
class LinkStatus:
    """The ETSI GS QKD 014 status of a link, seen by its master SAE. Sizes are in bits."""

    source_kme_id: str
    target_kme_id: str
    master_sae_id: str
    slave_sae_id: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_sae_id_count: int
    bits_per_second: int | None = None
    """Key generation rate, reported in `status_extension` by qchain's key manager."""

    def to_json(self) -> dict[str, object]:
        """The standard JSON object (Status data format)."""
        doc: dict[str, object] = {
            "source_KME_ID": self.source_kme_id,
            "target_KME_ID": self.target_kme_id,
            "master_SAE_ID": self.master_sae_id,
            "slave_SAE_ID": self.slave_sae_id,
            "key_size": self.key_size,
            "stored_key_count": self.stored_key_count,
            "max_key_count": self.max_key_count,
            "max_key_per_request": self.max_key_per_request,
            "max_key_size": self.max_key_size,
            "min_key_size": self.min_key_size,
            "max_SAE_ID_count": self.max_sae_id_count,
        }
        if self.bits_per_second is not None:
            doc["status_extension"] = {"qchain_bits_per_second": self.bits_per_second}
        return doc

    @classmethod
    def from_json(cls, doc: object) -> LinkStatus:
        """Parse a Status object; `KeyBadRequest` names the first bad field."""
        if not isinstance(doc, Mapping):
            raise KeyBadRequest("status is not a JSON object")

        def text(name: str) -> str:
            v = doc.get(name)
            if not isinstance(v, str):
                raise KeyBadRequest(f"status field {name} is missing or not a string")
            return v

        def count(name: str) -> int:
            v = doc.get(name)
            if type(v) is not int or v < 0:
                raise KeyBadRequest(f"status field {name} is missing or not a count")
            return v

        ext = doc.get("status_extension")
        rate = ext.get("qchain_bits_per_second") if isinstance(ext, Mapping) else None
        return cls(
            source_kme_id=text("source_KME_ID"),
            target_kme_id=text("target_KME_ID"),
            master_sae_id=text("master_SAE_ID"),
            slave_sae_id=text("slave_SAE_ID"),
            key_size=count("key_size"),
            stored_key_count=count("stored_key_count"),
            max_key_count=count("max_key_count"),
            max_key_per_request=count("max_key_per_request"),
            max_key_size=count("max_key_size"),
            min_key_size=count("min_key_size"),
            max_sae_id_count=count("max_SAE_ID_count"),
            bits_per_second=rate if type(rate) is int else None,
        )


class KeySource(ABC):
    """Keys for the links of one local SAE (`sae_id`)."""

    sae_id: str

    @abstractmethod
    async def enc_keys(self, slave_sae_id: str, number: int, size: int | None = None) -> list[Key]:
        """`number` new keys of `size` bits (the link's default if None) shared with slave."""

    @abstractmethod
    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[KeyId]) -> list[Key]:
        """The keys master took toward this SAE, in the order of `key_ids`. A key manager
        may answer with only some of them (a short answer, the rest asked for again
        later), never with others."""

    @abstractmethod
    async def status(self, slave_sae_id: str) -> LinkStatus:
        """The link's status with this SAE as master."""

    async def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release connections; the default holds none."""
