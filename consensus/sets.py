"""Validator sets: the set of one height and the anchor rule across a change (§10.1, §10.4).

`V(h)` is the set of height h: the ids of its members, ascending. Its sizes and
thresholds (`n`, `f`, `q`, `b`), its leader rule and the position of an id are those of
§1–§2 read with that set's numbers (§10, head). A chain whose set never changes has one
set, `ids = 0..n-1`, where an id and its position coincide, so every rule below is then
the rule of §2.1 and §3.2.

The engine receives `V(h)` and `V(h+1)` from its driver with every height it starts
(`StartHeight`) and the set history with `Start` (§10.2); it never computes a set.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

from qchain.errors import ConfigError

MAX_ID = 0xFFFF
"""Ids are U16 in the record's anchor field."""


@dataclass(frozen=True)
class VSet:
    """The ids of one height's members, ascending, distinct."""

    ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.ids:
            raise ConfigError("validators", "a set needs at least one member")
        if any(not 0 <= x <= MAX_ID for x in self.ids):
            raise ConfigError("validators", f"ids must be in [0, {MAX_ID}]")
        if any(a >= b for a, b in zip(self.ids, self.ids[1:], strict=False)):
            raise ConfigError("validators", "ids must be ascending and distinct")

    @classmethod
    def genesis(cls, n: int) -> VSet:
        """The set `0..n-1` of a chain that starts with n validators."""
        return cls(tuple(range(n)))

    @cached_property
    def members(self) -> frozenset[int]:
        return frozenset(self.ids)

    def __contains__(self, ident: object) -> bool:
        return ident in self.members

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def q(self) -> int:
        return self.n - self.f

    @property
    def b(self) -> int:
        return self.f + 1

    def pos(self, ident: int) -> int:
        """`pos(h, id)`: the position of a member (§10.1)."""
        return self.ids.index(ident)

    def others(self, me: int) -> tuple[int, ...]:
        """Every member but `me` (all of them if `me` is not a member)."""
        return tuple(j for j in self.ids if j != me)

    def next_of(self, x: int) -> int:
        """`next_W(x)`: the member with the smallest id above x, wrapping (§10.4)."""
        i = bisect_right(self.ids, x)
        return self.ids[i] if i < len(self.ids) else self.ids[0]

    def at(self, x: int) -> int:
        """`at_W(x)`: x if it is a member, else `next_W(x)` (§10.4)."""
        return x if x in self.members else self.next_of(x)

    def leader(self, anchor: int, r: int) -> int:
        """`leader(h, r) = V(h)[(pos(h, A(h)) + r) mod n(h)]` (§10.3, §10.4); `anchor` is
        the anchor id A(h), a member."""
        return self.ids[(self.pos(anchor) + r) % self.n]


def next_anchor(height: int, tenure: int, anchor: int, proposer: int, cur: VSet, nxt: VSet) -> int:
    """`A(height + 1)` from `A(height)` and the proposer of block `height` (§10.4).

    `S` is the ids unchanged from `V(height)` to `V(height + 1)`. With one set throughout,
    `S` is that set and this is §3.2: `(anchor + 1) mod n` at a tenure boundary, else the
    proposer.
    """
    unchanged = VSet(tuple(sorted(cur.members & nxt.members)))
    if (height + 1) % tenure == 0:
        return unchanged.next_of(anchor)
    return unchanged.at(proposer)


class SetHistory:
    """The set of every height this engine may be asked about: `(e, V(e))` for each
    activation height e, from the lowest height known (§10.2, "Set history").

    `known` is the highest height whose set the driver has given (cur + 1 once a height
    started); `of(h)` is None above it, and below the first entry.
    """

    def __init__(self, first: VSet, start: int = 1) -> None:
        self.starts: list[int] = [start]
        self.sets: list[VSet] = [first]
        self.known = start
        self.all_ids = first.members
        """Every id of every known set: the ids this node may hold a link to."""

    @classmethod
    def of_epochs(cls, epochs: tuple[tuple[int, VSet], ...], known: int) -> SetHistory:
        """The history of `(e, V(e))` entries, whose sets are known through `known`."""
        ordered = sorted(epochs, key=lambda e: e[0])
        hist = cls(ordered[0][1], ordered[0][0])
        for h, vs in ordered[1:]:
            hist.learn(h, vs)
        hist.known = max(hist.known, known)
        return hist

    def learn(self, h: int, vs: VSet) -> None:
        """The set of height h is `vs` (from the driver); entries above h are replaced."""
        if h < self.starts[0]:
            return
        i = bisect_right(self.starts, h)
        del self.starts[i:]
        del self.sets[i:]
        if self.sets[-1] != vs:
            self.starts.append(h)
            self.sets.append(vs)
        self.known = h
        self.all_ids = frozenset(x for s in self.sets for x in s.ids)

    def of(self, h: int) -> VSet | None:
        if h < self.starts[0] or h > self.known:
            return None
        return self.sets[bisect_right(self.starts, h) - 1]

    def changes_after(self, h: int) -> bool:
        """Whether `V(h + 1) != V(h)` (False if either is unknown)."""
        a, b = self.of(h), self.of(h + 1)
        return a is not None and b is not None and a != b
