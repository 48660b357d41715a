"""Key manager faults through the key managers' admin APIs.

A link is named "nodeA~nodeB" or "all". Cutting a link's keys (`set_keys ... 0`) sets its
rate to 0 *and* empties the key manager's stored pool (the eavesdropper switch, on then
off, is the admin API's only way to flush), so the nodes starve as soon as the keys they
already hold are spent, not minutes later. `drain` does the same through the admin API's
`stored` count and `refill` puts keys back.

With one KME per node every key manager action goes to the KMEs that hold the link: both
ends' for "nodeA~nodeB" (the master's KME serves enc_keys, the slave's dec_keys, and
each end is master for its own frames), every KME for "all" (`kmes_for_link`).
`set_behaviour` replaces the behaviour switches of chosen sites' KMEs, `kme_down` /
`kme_up` stop (SIGTERM) and start one site's KME. Counters are read per KME and added
up per link (`kme_links`, `sum_links`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from devnet.running import BackendError, Network


def links(target: Network, link: str) -> list[tuple[str, str]]:
    """SAE pairs of "nodeA~nodeB" or "all"."""
    sae = {n.name: n.sae_id for n in target.plan.nodes}
    if link == "all":
        nodes = target.plan.nodes
        return [(a.sae_id, b.sae_id) for a in nodes for b in nodes if a.index < b.index]
    a, _, b = link.partition("~")
    if a not in sae or b not in sae or a == b:
        raise BackendError(f"{link!r}: give two different nodes as nodeA~nodeB, or all")
    return [(sae[a], sae[b])]


def kmes_for_link(target: Network, link: str) -> list[str]:
    """The key managers that hold `link` ("nodeA~nodeB" or "all"): the shared KMS, or with
    one KME per node both ends' KMEs (the master's serves enc_keys, the slave's dec_keys,
    and each side is master for the frames it sends), every KME for "all"."""
    if link == "all":
        return target.kme_names()
    links(target, link)
    a, _, b = link.partition("~")
    return list(dict.fromkeys((target.kme_of(a), target.kme_of(b))))


def kmes_for_nodes(target: Network, names: Iterable[str] | None) -> list[str]:
    """The key managers serving the named nodes (None: every key manager)."""
    if names is None:
        return target.kme_names()
    return list(dict.fromkeys(target.kme_of(n) for n in names))


def set_keys(target: Network, link: str, rate: str | int) -> None:
    """Set a link's key rate (profile name or bits/s); 0 also empties its stored pool."""
    for kme in kmes_for_link(target, link):
        for a, b in links(target, link):
            base = f"/admin/links/{a}/{b}"
            body = {"profile": rate} if isinstance(rate, str) else {"bits_per_second": rate}
            target.kme_admin(kme, "POST", f"{base}/rate", body)
            if rate == 0:
                target.kme_admin(kme, "POST", f"{base}/eavesdropper", {"active": True})
                target.kme_admin(kme, "POST", f"{base}/eavesdropper", {"active": False})


def kms_fault(target: Network, mode: str, link: str = "all") -> None:
    """outage | eavesdrop | clear (clear also restores the devnet's key rate)."""
    if mode not in ("outage", "eavesdrop", "clear"):
        raise BackendError(f"kms mode {mode!r}: outage, eavesdrop or clear")
    for kme in kmes_for_link(target, link):
        for a, b in links(target, link):
            base = f"/admin/links/{a}/{b}"
            if mode == "outage":
                target.kme_admin(kme, "POST", f"{base}/outage", {"active": True})
            elif mode == "eavesdrop":
                target.kme_admin(kme, "POST", f"{base}/eavesdropper", {"active": True})
            else:
                target.kme_admin(kme, "POST", f"{base}/outage", {"active": False})
                target.kme_admin(kme, "POST", f"{base}/eavesdropper", {"active": False})
                target.kme_admin(kme, "POST", f"{base}/rate", {"profile": target.plan.kms_rate})


def drain(target: Network, link: str = "all", rate: int = 0) -> None:
    """Empty the links' stored pools at every key manager that holds them, generating
    `rate` bits/s from then on (0: the pools stay empty)."""
    for kme in kmes_for_link(target, link):
        for a, b in links(target, link):
            base = f"/admin/links/{a}/{b}"
            target.kme_admin(kme, "POST", f"{base}/rate", {"bits_per_second": rate})
            target.kme_admin(kme, "POST", f"{base}/stored", {"stored_key_count": 0})


def refill(target: Network, link: str, count: int) -> None:
    """Back to the devnet's rate profile, with `count` keys stored on each link."""
    for kme in kmes_for_link(target, link):
        for a, b in links(target, link):
            base = f"/admin/links/{a}/{b}"
            target.kme_admin(kme, "POST", f"{base}/rate", {"profile": target.plan.kms_rate})
            target.kme_admin(kme, "POST", f"{base}/stored", {"stored_key_count": count})


def set_behaviour(target: Network, switches: dict[str, Any], names: Iterable[str] | None) -> None:
    """Replace the behaviour switches of the named nodes' key managers (None: all); `{}`
    restores the standard set."""
    for kme in kmes_for_nodes(target, names):
        target.kme_admin(kme, "PUT", "/admin/behaviour", switches)


def kme_down(target: Network, name: str) -> str:
    """Stop (SIGTERM) the KME that serves node `name`; only with one KME per node (the
    shared KMS is every node's). Returns the KME's service name."""
    if target.plan.kme_mode != "per-node":
        raise BackendError("kme-down needs a devnet with one KME per node (kme_per_node)")
    kme = target.kme_of(name)
    target.stop_kme(kme)
    return kme


def kme_up(target: Network, name: str) -> None:
    target.start_kme(target.kme_of(name))


def kme_links(target: Network, kme: str) -> dict[str, dict[str, int]]:
    """One key manager's counters and stored key count per link, keyed "SAE-a~SAE-b"."""
    doc = target.kme_admin(kme, "GET", "/admin/links")
    out: dict[str, dict[str, int]] = {}
    for link in doc.get("links", []) if isinstance(doc, dict) else []:
        counters = {k: int(v) for k, v in link.get("counters", {}).items()}
        counters["stored_key_count"] = int(link.get("stored_key_count", 0))
        out[str(link["link"])] = counters
    return out


def sum_links(per_kme: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Per-link counters added over key managers: with one KME per node each counts what
    its own SAE took (as master it also counts the copies it relayed to the slave)."""
    out: dict[str, dict[str, int]] = {}
    for doc in per_kme:
        for link, counters in doc.items():
            total = out.setdefault(link, {})
            for k, v in counters.items():
                total[k] = total.get(k, 0) + v
    return out


def restarted(last: dict[str, dict[str, int]], now: dict[str, dict[str, int]]) -> bool:
    """A KME's counters went down between two reads: it was restarted in between."""
    return any(
        now.get(link, {}).get(k, 0) < v
        for link, counters in last.items()
        for k, v in counters.items()
        if k != "stored_key_count"
    )


def carry_over(
    base: dict[str, dict[str, int]],
    last: dict[str, dict[str, int]],
    final: dict[str, dict[str, int]],
) -> dict[str, dict[str, int]]:
    """The counters of a restarted KME's earlier lives: `base` plus what it had counted
    when it stopped (the larger of the last periodic read and a `final` read just before
    the stop, if any); stored keys do not carry over."""
    ended = {
        link: {k: max(v, final.get(link, {}).get(k, 0)) for k, v in counters.items()}
        for link, counters in (last or final).items()
    }
    total = sum_links([base, ended])
    return {link: {**c, "stored_key_count": 0} for link, c in total.items()}


def kms_links(target: Network) -> dict[str, dict[str, int]]:
    """Every link's counters and stored key count over all key managers."""
    return sum_links(kme_links(target, kme) for kme in target.kme_names())
