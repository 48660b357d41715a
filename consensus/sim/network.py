"""The simulated network: directed links, the key ledger, and frame delivery.

Frames travel over directed links. Before GST a link may delay (with jitter, hence
reorder), duplicate or lose a frame and partitions may cut it; after GST every frame between
running nodes arrives within [delay_lo, delay_hi]. Each frame takes the next key id of its
link from the ledger; receivers reject a key id they have seen (replay), and the ledger
flags any key id issued twice (§6 invariant 11). The counters live on the `Sim` so that
tests and the invariant checker read them in one place.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from consensus.events import Event, MessageIn
from consensus.messages import BlockReq, BlockResp, Message, SyncReq, SyncResp

if TYPE_CHECKING:
    from consensus.sim.world import Sim, SimNode

_DRIVER_MSGS = (SyncReq, SyncResp, BlockReq, BlockResp)


def send_frame(sim: Sim, nd: SimNode, to: int, msgs: list[Message], raw: bool = False) -> None:
    """Send one frame; a Byzantine node's strategy rewrites it unless `raw`."""
    src = nd.ident
    if nd.strategy is not None and not raw:
        msgs = [x for m in msgs for x in nd.strategy.outgoing(sim, nd, to, m)]
        if not msgs:
            return
    lane = nd.copy if not sim.cfg.twin_keys_cloned else 0
    ctr_key = (src, to, lane)
    kid = sim.key_next.get(ctr_key, 0)
    sim.key_next[ctr_key] = kid + 1
    key_id = (lane, kid)
    used = sim.keys_used.setdefault((src, to), set())
    if key_id in used:
        sim.key_reuse.append((src, to, key_id))
    used.add(key_id)
    sim.frames[(src, to)] = sim.frames.get((src, to), 0) + 1
    sim.last_frame_us = sim.now
    h = max((m.height for m in msgs if not isinstance(m, _DRIVER_MSGS)), default=0)
    sim.height_frames[(src, to, h)] = sim.height_frames.get((src, to, h), 0) + 1
    sim.monitor.on_send(nd, to, msgs)
    if sim.cfg.trace:
        sim.log(f"node {nd.name} -> {to}: " + ", ".join(short(m) for m in msgs))
    if to not in nd.reach:
        return
    if sim.cfg.drop is not None:
        msgs = [m for m in msgs if not sim.cfg.drop(sim, src, to, m)]
    frame = tuple(msgs)
    if not frame:
        return
    for dst in sim.nodes[to]:
        if src not in dst.reach:
            continue
        for _ in range(_copies(sim, src, to)):
            delay = _delay(sim, src, to)
            sim.at(sim.now + delay, partial(_arrive, sim, dst, src, key_id, frame))


def _copies(sim: Sim, src: int, to: int) -> int:
    cfg = sim.cfg
    if any(p.cuts(src, to, sim.now) for p in cfg.partitions):
        return 0
    if sim.now >= cfg.gst_us:
        return 1
    if cfg.loss and sim.rng.random() < cfg.loss:
        return 0
    if cfg.dup and sim.rng.random() < cfg.dup:
        return 2
    return 1


def _delay(sim: Sim, src: int, to: int) -> int:
    cfg = sim.cfg
    default = cfg.delay_us if sim.now >= cfg.gst_us else cfg.pre_delay_us
    lo, hi = cfg.link_delay_us.get((src, to), default)
    return sim.rng.randint(lo, hi)


def _arrive(
    sim: Sim, dst: SimNode, src: int, key_id: tuple[int, int], frame: tuple[Message, ...]
) -> None:
    if not dst.up:
        return
    seen = dst.seen_keys.setdefault(src, set())
    if key_id in seen:
        return
    seen.add(key_id)
    evs: list[Event] = []
    for m in frame:
        if isinstance(m, BlockReq | BlockResp):
            sim.on_driver_msg(dst, src, m)
        else:
            evs.append(MessageIn(src, m))
    if evs and dst.up:
        sim.step_batch(dst, evs)


def tick(sim: Sim, nd: SimNode) -> None:
    """A Byzantine strategy's periodic messages, sent as they are (no rewriting)."""
    st = nd.strategy
    if st is None or st.tick_us is None:
        return
    if nd.up:
        frames: dict[int, list[Message]] = {}
        for to, m in st.tick(sim, nd):
            frames.setdefault(to, []).append(m)
        for to, msgs in frames.items():
            send_frame(sim, nd, to, msgs, raw=True)
    sim.at(sim.now + st.tick_us, lambda: tick(sim, nd))


def short(x: object) -> str:
    text = repr(x)
    return text if len(text) < 160 else text[:157] + "..."
