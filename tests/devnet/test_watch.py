"""The terminal view of `qchain devnet status --watch` (devnet.watch), rendered from
made-up snapshots: no terminal, no network."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from devnet.watch import NodeSnapshot, Snapshot, link_figures, render


def qkd(me: str, peers: dict[str, tuple[int, int, int, int]]) -> dict[str, Any]:
    """peer -> (level, consumed, waits, rejected)"""
    return {
        "sae_id": me,
        "links": {
            p: {
                "send": {"level": lv, "keys_consumed": used, "waits": waits},
                "receive": {"level": 100, "waits": 0, "rejected": {}},
                "transport": {"rejected": {"bad-tag": rej} if rej else {}},
            }
            for p, (lv, used, waits, rej) in peers.items()
        },
    }


def status(name: str, height: int, round_: int | None, **extra: Any) -> dict[str, Any]:
    return {
        "node": name,
        "height": height,
        "round": round_,
        "leader": 1,
        "peers": [1],
        "mempool": {"txs": 3},
        "alerts": {},
        **extra,
    }


def text_of(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=140, color_system=None).print(renderable)
    return out.getvalue()


def test_link_figures_prefer_transport_rejections() -> None:
    doc = qkd("A", {"B": (5, 10, 2, 3)})["links"]["B"]
    f = link_figures(doc)
    assert (f.level, f.consumed, f.waits, f.rejected) == (5, 10, 2, 3)


def test_render_shows_heights_rounds_leaders_pools_and_growth() -> None:
    before = Snapshot(
        10.0,
        "devnet-x",
        (
            NodeSnapshot(
                "node0", "", 11, status("node0", 7, 0), qkd("SAE-0", {"SAE-1": (90, 100, 0, 0)})
            ),
            NodeSnapshot("node1", "", None, None, None),
        ),
    )
    now = Snapshot(
        12.0,
        "devnet-x",
        (
            NodeSnapshot(
                "node0",
                "",
                11,
                status("node0", 9, 2, syncing=True),
                qkd("SAE-0", {"SAE-1": (0, 110, 4, 1)}),
            ),
            NodeSnapshot("node1", "", None, None, None),
        ),
    )
    text = text_of(render(now, before))
    assert "devnet-x" in text
    row = next(line for line in text.splitlines() if "node0" in line)
    assert " 9 " in row and " 2 " in row and "#1" in row and "catching up" in row
    assert "stopped" in next(line for line in text.splitlines() if "node1" in line)
    link = next(line for line in text.splitlines() if "SAE-0 → SAE-1" in line)
    assert "5.0" in link, "10 keys in 2 s"
    assert "4 (+4)" in link and "1 (+1)" in link
    # the first frame has no rate yet
    assert "-" in next(line for line in text_of(render(before)).splitlines() if "SAE-1" in line)
