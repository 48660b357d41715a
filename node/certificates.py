"""Commit certificates: collecting the validators' signatures of a committed block.

After a commit every validator signs the chain block hash with its ML-DSA-65 key and
sends the signature to every peer; n - f valid signatures form the certificate stored with
the block. `CertificateCollector` is the bookkeeping of that exchange, with no I/O: it is
told what this node committed and what peers sent, checks each signature with the
verifier it was given, and says what to do: store a complete certificate, report a peer
that signed another block, or answer a peer that committed late and missed the
signatures sent at the time (once per peer and height).

Signatures for heights this node has not committed yet are kept, unchecked, up to
CERT_BUFFER_HEIGHTS ahead, and checked when it commits. What is kept is bounded: heights
more than KEEP_HEIGHTS below the last certificate are forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qchain.types import CommitCertificate, CommitSignature

CERT_BUFFER_HEIGHTS = 4
"""How far above the last committed height signatures are kept until this node commits."""
CERT_LATE_HEIGHTS = 2
"""A signature for a height this many below the last committed one (or more) comes from a
peer that committed late: it gets this node's signature in answer."""
KEEP_HEIGHTS = 64
"""How far below the newest height signatures and answers are remembered."""

SignatureCheck = Callable[[int, int, bytes, bytes], bool]
"""(validator, height, block hash, signature) -> whether the signature is valid."""


@dataclass(frozen=True)
class Verdict:
    """What to do about one signature received from a peer."""

    certificate: CommitCertificate | None = None
    """A certificate that is now complete: store it."""
    mismatch: bool = False
    """The peer signed another block at this height than the one this node committed."""
    answer: bool = False
    """The peer committed late: send it this node's own signature of the height."""
    own: bytes | None = None
    """That signature, if still remembered here (else it is in the stored certificate)."""


class CertificateCollector:
    """The signatures of one validator's recent heights."""

    def __init__(self, me: int, quorum: int | Callable[[int], int], check: SignatureCheck) -> None:
        """quorum: signatures a certificate needs, or a function of the height giving
        it (q(h) of the set of that height, CONSENSUS.md §10.5)."""
        self.me = me
        self.quorum = quorum
        self.check = check
        self.sigs: dict[int, dict[int, bytes]] = {}
        """Signatures by height and validator, until the height has its certificate."""
        self.own: dict[int, bytes] = {}
        """This node's own signature of each recent height."""
        self.replied: dict[int, set[int]] = {}
        """Peers answered per height."""

    def signed(
        self, height: int, block_hash: bytes, signature: bytes, *, certified: bool
    ) -> CommitCertificate | None:
        """This node committed block_hash at height and signed it; the signatures that
        arrived before are checked now. certified: whether the height has its
        certificate already. Returns the certificate if it is now complete."""
        self.own[height] = signature
        for old in [x for x in self.own if x < height - KEEP_HEIGHTS]:
            del self.own[old]
        self.sigs.setdefault(height, {})[self.me] = signature
        pending = self.sigs.get(height, {})
        for j, s in list(pending.items()):
            if j != self.me and not self.check(j, height, block_hash, s):
                del pending[j]
        return self._complete(height, block_hash, certified)

    def early(self, sender: int, height: int, signature: bytes, *, committed: int) -> bool:
        """Whether height is above this node's last committed height; if so the peer's
        signature is kept, unchecked, when the height is near enough."""
        if height <= committed:
            return False
        if height <= committed + CERT_BUFFER_HEIGHTS:
            self.sigs.setdefault(height, {})[sender] = signature
        return True

    def received(
        self,
        sender: int,
        height: int,
        block_hash: bytes,
        signature: bytes,
        *,
        committed: int,
        ours: bytes | None,
        certified: bool,
    ) -> Verdict:
        """A peer's signature of block_hash at a committed height (see `early`).
        committed: this node's last committed height; ours: the hash of the block it
        committed at height (None if not known); certified: whether the height has its
        certificate."""
        if ours is None or ours != block_hash:
            return Verdict(mismatch=True)
        if not certified:
            if self.check(sender, height, block_hash, signature):
                self.sigs.setdefault(height, {})[sender] = signature
                return Verdict(certificate=self._complete(height, block_hash, certified))
            return Verdict()
        # A peer that signs a height this node has long passed committed it late and
        # missed the signatures sent at the time: answer it once with ours.
        if height + CERT_LATE_HEIGHTS > committed:
            return Verdict()
        replied = self.replied.setdefault(height, set())
        if sender in replied:
            return Verdict()
        replied.add(sender)
        return Verdict(answer=True, own=self.own.get(height))

    def _complete(
        self, height: int, block_hash: bytes, certified: bool
    ) -> CommitCertificate | None:
        sigs = self.sigs.get(height, {})
        need = self.quorum(height) if callable(self.quorum) else self.quorum
        if len(sigs) < need or certified:
            return None
        cert = CommitCertificate(
            height, block_hash, tuple(CommitSignature(j, s) for j, s in sorted(sigs.items()))
        )
        del self.sigs[height]
        for old in [x for x in self.sigs if x < height - KEEP_HEIGHTS]:
            del self.sigs[old]
        for old in [x for x in self.replied if x < height - KEEP_HEIGHTS]:
            del self.replied[old]
        return cert
