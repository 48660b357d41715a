"""`qchain devnet status --watch`: a live terminal view of a running devnet.

Once a second every node is asked for `/v1/status` and `/v1/qkd`, and the screen is
redrawn (with rich) with two tables: the validators (height, round, leader, peers,
mempool, alerts) and the directed QKD links (send pool level as a bar, keys consumed per
second since the last look, waits and rejected frames, highlighted when they grow).

`take_snapshot` gathers the figures, `render` turns a snapshot (and the one before it)
into something to print; both are plain functions so they can be tested without a
terminal or a network. `watch` is the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from devnet.nodeapi import node_qkd
from devnet.running import Network

BAR_WIDTH = 20


@dataclass(frozen=True)
class NodeSnapshot:
    name: str
    api_url: str
    pid: int | None
    status: Mapping[str, Any] | None
    """`/v1/status`, or None if the node did not answer."""
    qkd: Mapping[str, Any] | None
    """`/v1/qkd`, or None if the node did not answer."""


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    """`time.monotonic()` when the figures were read (for rates)."""
    chain_id: str
    nodes: tuple[NodeSnapshot, ...]


@dataclass(frozen=True)
class LinkFigures:
    level: int
    consumed: int
    waits: int
    rejected: int


def take_snapshot(net: Network, clock: Callable[[], float] = time.monotonic) -> Snapshot:
    nodes = []
    for name in net.node_names():
        url = net.api_url(name)
        status = net.node_status(name, 1.0)
        qkd = node_qkd(url, 1.0) if status is not None else None
        nodes.append(NodeSnapshot(name, url, net.pid(name), status, qkd))
    return Snapshot(clock(), net.plan.chain_id, tuple(nodes))


def link_figures(link: Mapping[str, Any]) -> LinkFigures:
    """The figures of one `/v1/qkd` link entry (transport rejections if known, else the
    frame verifier's)."""
    send = link.get("send") or {}
    receive = link.get("receive") or {}
    transport = link.get("transport") or {}
    rejected = transport.get("rejected") or receive.get("rejected") or {}
    return LinkFigures(
        level=int(send.get("level", 0)),
        consumed=int(send.get("keys_consumed", 0)),
        waits=int(send.get("waits", 0)) + int(receive.get("waits", 0)),
        rejected=sum(int(v) for v in rejected.values()),
    )


def _links(node: NodeSnapshot) -> dict[str, LinkFigures]:
    if node.qkd is None:
        return {}
    return {peer: link_figures(link) for peer, link in (node.qkd.get("links") or {}).items()}


def _bar(level: int, most: int) -> Text:
    filled = 0 if most <= 0 else round(BAR_WIDTH * min(level, most) / most)
    if level == 0:
        style = "bold red"
    elif level < most / 4:
        style = "yellow"
    else:
        style = "green"
    return Text("█" * filled, style=style) + Text("·" * (BAR_WIDTH - filled), style="dim")


def _count(value: int, before: int | None, style: str) -> Text:
    """A counter, bold in style when it grew since the last look, plain style if ever
    nonzero, dim at zero."""
    if before is not None and value > before:
        return Text(f"{value} (+{value - before})", style=f"bold {style}")
    return Text(str(value), style=style if value else "dim")


def render(now: Snapshot, before: Snapshot | None = None) -> RenderableType:
    """The two tables for one snapshot; before (the previous one) gives rates and growth."""
    prev = {n.name: n for n in before.nodes} if before is not None else {}
    dt = now.taken_at - before.taken_at if before is not None else 0.0

    nodes = Table(title=f"qchain devnet {now.chain_id}", title_justify="left", expand=True)
    node_columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("node", "left"),
        ("pid", "right"),
        ("height", "right"),
        ("round", "right"),
        ("leader", "right"),
        ("peers", "left"),
        ("mempool", "right"),
        ("state", "left"),
    )
    for col, justify in node_columns:
        nodes.add_column(col, justify=justify)
    top = max((n.status.get("height", 0) for n in now.nodes if n.status), default=0)
    for n in now.nodes:
        st = n.status
        if st is None:
            down = "stopped" if n.pid is None else "not answering"
            nodes.add_row(n.name, str(n.pid or "-"), Text(down, style="bold red"))
            continue
        height = int(st.get("height", 0))
        alerts = [k for k, v in (st.get("alerts") or {}).items() if v]
        if st.get("halted"):
            state = Text(f"halted: {st['halted']}", style="bold red")
        elif alerts:
            state = Text("alerts: " + ", ".join(alerts), style="bold red")
        elif st.get("syncing"):
            state = Text("catching up", style="yellow")
        else:
            state = Text("ok", style="green")
        round_ = st.get("round")
        nodes.add_row(
            n.name,
            str(n.pid or "-"),
            Text(str(height), style="bold" if height == top else "yellow"),
            Text("-" if round_ is None else str(round_), style="yellow" if round_ else ""),
            "-" if st.get("leader") is None else f"#{st['leader']}",
            ",".join(str(p) for p in st.get("peers", [])),
            str((st.get("mempool") or {}).get("txs", 0)),
            state,
        )

    links = Table(title="QKD links (send pool)", title_justify="left", expand=True)
    link_columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("link", "left"),
        ("level", "right"),
        ("pool", "left"),
        ("keys/s", "right"),
        ("consumed", "right"),
        ("waits", "right"),
        ("rejected", "right"),
    )
    for col, justify in link_columns:
        links.add_column(col, justify=justify)
    most = max((f.level for n in now.nodes for f in _links(n).values()), default=0)
    for n in now.nodes:
        me = (n.qkd or {}).get("sae_id", n.name)
        earlier = _links(prev[n.name]) if n.name in prev else {}
        for peer, f in sorted(_links(n).items()):
            old = earlier.get(peer)
            rate = "-"
            if old is not None and dt > 0:
                rate = f"{max(0, f.consumed - old.consumed) / dt:.1f}"
            links.add_row(
                f"{me} → {peer}",
                Text(str(f.level), style="bold red" if f.level == 0 else ""),
                _bar(f.level, most),
                rate,
                str(f.consumed),
                _count(f.waits, None if old is None else old.waits, "yellow"),
                _count(f.rejected, None if old is None else old.rejected, "red"),
            )
    return Group(nodes, links, Text("Ctrl-C to stop", style="dim"))


def watch(
    net: Network,
    interval_s: float = 1.0,
    console: Console | None = None,
    iterations: int | None = None,
) -> int:
    """Redraw the view every interval_s until Ctrl-C (or for `iterations` redraws)."""
    before: Snapshot | None = None
    shown = 0
    try:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while iterations is None or shown < iterations:
                started = time.monotonic()
                now = take_snapshot(net)
                live.update(render(now, before), refresh=True)
                before = now
                shown += 1
                if iterations is not None and shown >= iterations:
                    break
                time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    return 0
