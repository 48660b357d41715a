"""`qchain bench`: throughput, commit latency and QKD key cost of a local devnet.

    qchain bench [--validators N] [--rate TX/S | --sweep] [--duration S] [--scheme S]
                 [--tx notary|voucher|mix] [--kms-rate PROFILE] [--faults K] [--out DIR]
                 [--baseline] [--heartbeat-ms MS] [--devnet DIR] [--profile-leader S]

For every load point the harness starts a fresh devnet (temporary directory, free ports on
127.0.0.1) whose genesis carries `--senders` extra members, or reuses `--devnet DIR`. It
measures this machine's cost of verifying one signature and executing one transaction
(the CPU-bound ceiling), pre-signs the transactions (cached on disk), measures idle key
burn, then runs the open-loop load generator (`devnet.bench.load`, a separate process) at
the offered rate, spread over the validators' APIs. One node's event stream stamps every
commit. After the warm-up the measurement window opens: CPU time of every process and
the QKD counters of every link are read at both edges. `--faults K` kills the K
highest-index validators as the window opens (the load then goes to the others). At a
key-rate profile other than `lab` the run is measured in steady state, not on the key
stock (`devnet.bench.keyrate`).

Output in DIR: `report.json`, `report.md`, `throughput-latency.png` and, with
`--profile-leader`, the leader's py-spy profile (`leader-profile.txt`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from devnet.bench import keyrate, workload
from devnet.bench.load import command as load_command
from devnet.bench.observe import CommitListener, cpu_seconds, snapshot
from devnet.bench.report import (
    REPORT_VERSION,
    idle_figures,
    point_figures,
    profile_limits,
    write_report,
)
from devnet.local import LocalNetwork, Service
from qchain.keys import Scheme

SWEEP_RATES = {
    "ed25519": (250, 500, 1000, 1500, 2000, 3000),
    "ml-dsa-65": (150, 300, 500, 750, 1000),
    "sm2": (150, 250, 500, 750, 1000),
}

IDLE_SETTLE_S = 3.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--validators", type=int, default=4, help="n = 3f+1 (default 4)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, default=500.0, help="offered tx/s (default 500)")
    load.add_argument("--sweep", action="store_true", help="a series of rates up to saturation")
    load.add_argument("--rates", help="comma-separated offered rates (a custom sweep)")
    load.add_argument("--idle-only", action="store_true", help="only measure idle key burn")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the window")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle key burn window")
    p.add_argument("--scheme", choices=[s.value for s in Scheme], default="ed25519")
    p.add_argument("--tx", choices=list(workload.KINDS), default="notary")
    p.add_argument("--kms-rate", default="lab", help="lab|metro|long-haul|constrained")
    p.add_argument("--faults", type=int, default=0, help="validators killed after warm-up")
    p.add_argument("--heartbeat-ms", type=int, default=1000, help="empty block interval; 0 = none")
    p.add_argument(
        "--profile",
        choices=["default", "lan", "test"],
        default="lan",
        help="validator timing profile (default: lan, CONSENSUS.md §4: one machine)",
    )
    p.add_argument("--senders", type=int, default=256, help="bench sender accounts")
    p.add_argument("--out", type=Path, default=None, help="report directory")
    p.add_argument("--devnet", type=Path, default=None, help="reuse this devnet directory")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="INSECURE: validators MAC with a fixed test key instead of QKD keys",
    )
    p.add_argument(
        "--profile-leader",
        type=float,
        default=0.0,
        metavar="S",
        help="py-spy record the leader for S seconds in the last point's window",
    )


@dataclass(frozen=True)
class Options:
    validators: int
    rates: tuple[float, ...]
    duration_s: float
    warmup_s: float
    idle_s: float
    scheme: str
    tx: str
    kms_rate: str
    faults: int
    heartbeat_ms: int | None
    profile: str
    senders: int
    out: Path
    devnet: Path | None
    baseline: bool
    profile_leader_s: float

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Options:
        if a.idle_only:
            rates: tuple[float, ...] = ()
        elif a.rates:
            rates = tuple(float(r) for r in a.rates.split(","))
        elif a.sweep:
            rates = tuple(float(r) for r in SWEEP_RATES[a.scheme])
        else:
            rates = (float(a.rate),)
        if not 0 <= a.faults <= (a.validators - 1) // 3:
            raise SystemExit(f"--faults must be between 0 and f = {(a.validators - 1) // 3}")
        if a.faults and a.devnet is not None:
            raise SystemExit("--faults needs a fresh devnet (it kills validators)")
        out = a.out or Path("bench-out") / time.strftime("%Y%m%d-%H%M%S")
        return cls(
            validators=a.validators,
            rates=rates,
            duration_s=a.duration,
            warmup_s=a.warmup,
            idle_s=a.idle,
            scheme=a.scheme,
            tx=a.tx,
            kms_rate=a.kms_rate,
            faults=a.faults,
            heartbeat_ms=a.heartbeat_ms or None,
            profile=a.profile,
            senders=a.senders,
            out=out,
            devnet=a.devnet,
            baseline=a.baseline,
            profile_leader_s=a.profile_leader,
        )


# --- the devnet -------------------------------------------------------------------------


class BenchNetwork(LocalNetwork):
    """A LocalNetwork whose validators may run the INSECURE fixed-key baseline."""

    def __init__(self, directory: Path, baseline: bool) -> None:
        super().__init__(directory)
        self.baseline = baseline

    def services(self) -> list[Service]:
        out = super().services()
        if not self.baseline:
            return out
        return [
            Service(
                s.name,
                (sys.executable, "-m", "devnet.bench.baseline", *s.argv[-2:]),
            )
            if s.name != "kms"
            else s
            for s in out
        ]

    def api_urls(self) -> dict[int, str]:
        return {n.index: n.api_url for n in self.plan.nodes}


@contextlib.contextmanager
def devnet(opts: Options) -> Iterator[BenchNetwork]:
    """A running devnet: fresh in a temporary directory, or the one in opts.devnet."""
    if opts.devnet is not None:
        net = BenchNetwork(opts.devnet, opts.baseline)
        if not workload.has_bench_members(net.dir, net.plan, opts.senders):
            raise SystemExit(f"{opts.devnet} has no bench senders; let qchain bench make one")
        _start(net)
        yield net
        return
    from devnet.kms import write_kms_files
    from devnet.network import plan_network, write_network

    tmp = Path(tempfile.mkdtemp(prefix="qchain-bench-"))
    plan = plan_network(
        validators=opts.validators,
        base_port=None,
        scheme=opts.scheme,
        kms_rate=opts.kms_rate,
        heartbeat_ms=opts.heartbeat_ms,
        profile=opts.profile,
    )
    write_network(tmp, plan)
    write_kms_files(tmp, plan, initial_keys=keyrate.initial_keys(opts.kms_rate))
    workload.add_bench_members(tmp, plan, opts.senders)
    net = BenchNetwork(tmp, opts.baseline)
    try:
        _start(net)
        yield net
    finally:
        net.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _start(net: BenchNetwork, timeout_s: float = 90.0) -> None:
    net.start_all(min_height=0, timeout=timeout_s)
    want = len(net.plan.nodes) - 1
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = net.wait_ready(min_height=0, timeout=timeout_s)
        if all(len(s.get("peers", [])) >= want for s in statuses.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError("validators did not connect to each other")
        time.sleep(0.1)


# --- the limit beside the result ------------------------------------------------------


def measure_limit(scheme: str, tx: str, validators: int) -> dict[str, Any]:
    """This machine's verify and execute cost, and the CPU-bound ceiling they imply."""
    from devnet.bench.core import measure
    from devnet.bench.execution import run as execution_run
    from qchain.keys import dev_key, verify

    key = dev_key("bench", "signer", scheme)
    digest = bytes(32)
    sig = key.sign(digest)
    verify_us = statistics.median(
        measure(lambda: verify(Scheme(scheme), key.public_key, digest, sig), 500)
    )
    exe = execution_run(300, Scheme(scheme))
    costs = {
        "notary": exe["notary.anchor (cached-signature)"]["median_us"],
        "voucher": exe["voucher.pay (cached-signature)"]["median_us"],
    }
    execute_us = (costs["notary"] + costs["voucher"]) / 2 if tx == "mix" else costs[tx]
    cores = len(os.sched_getaffinity(0))
    per_tx = verify_us + execute_us
    return {
        "cores": cores,
        "verify_us": round(verify_us, 1),
        "execute_us": round(execute_us, 1),
        "execute_by_kind_us": costs,
        "per_tx_us": round(per_tx, 1),
        "ceiling_tx_s": round(cores / (validators * per_tx * 1e-6), 1),
    }


# --- one load point ---------------------------------------------------------------------


async def _submit_setup(net: BenchNetwork, opts: Options) -> None:
    """The voucher programme and a grant to every sender (voucher and mix loads)."""
    from devnet.network import account_key
    from qchain.client import AsyncClient
    from qchain.types import new_transaction

    issuer = account_key("issuer", opts.scheme)
    url = net.plan.nodes[0].api_url
    async with AsyncClient(url) as c:
        nonce = await c.next_nonce(issuer.address)
        txs = [
            new_transaction(
                issuer,
                chain_id=net.plan.chain_id,
                nonce=nonce,
                contract="voucher",
                method="create",
                args=[workload.PROGRAMME, "benchmark", workload.PROGRAMME_BUDGET, 10**9],
            )
        ]
        for i in range(opts.senders):
            txs.append(
                new_transaction(
                    issuer,
                    chain_id=net.plan.chain_id,
                    nonce=nonce + 1 + i,
                    contract="voucher",
                    method="grant",
                    args=[
                        workload.PROGRAMME,
                        workload.sender_key(i, opts.scheme).address,
                        workload.GRANT,
                    ],
                )
            )
        for k in range(0, len(txs), 200):
            await c.submit_batch(txs[k : k + 200])
        last = txs[-1].hash
        deadline = time.monotonic() + 60
        while (await c.tx_status(last)).status != "committed":
            if time.monotonic() > deadline:
                raise TimeoutError("the voucher setup did not commit")
            await asyncio.sleep(0.2)


async def _first_nonces(net: BenchNetwork, senders: int, scheme: str) -> list[int]:
    from qchain.client import AsyncClient

    async with AsyncClient(net.plan.nodes[0].api_url) as c:
        return [await c.next_nonce(workload.sender_key(i, scheme).address) for i in range(senders)]


def _cpu(pids: Mapping[str, int]) -> dict[str, float | None]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


async def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def measure_idle(net: BenchNetwork, seconds: float) -> dict[str, Any]:
    """Key burn of a network with no load, in steady state: after IDLE_SETTLE_S, so that
    the start-up exchange (links, first sync) is not counted as idle."""
    urls = {i: u for i, u in net.api_urls().items() if net.pid(f"node{i}") is not None}
    await asyncio.sleep(IDLE_SETTLE_S)
    s0 = await snapshot(urls)
    await asyncio.sleep(seconds)
    s1 = await snapshot(urls)
    return idle_figures(s0, s1, 0)


async def run_point(
    net: BenchNetwork, opts: Options, rate: float, limit: Mapping[str, Any], work: Path
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """One offered rate: returns its figures, the idle figures with the crashed nodes
    (faults only) and the leader's profile text (last point with --profile-leader)."""
    n = len(net.plan.nodes)
    live = list(range(n - opts.faults))
    total = math.ceil(rate * (opts.warmup_s + opts.duration_s))
    per_sender = math.ceil(total / opts.senders) + 2
    first = await _first_nonces(net, opts.senders, opts.scheme)
    signed = await asyncio.to_thread(
        workload.presign, opts.scheme, opts.tx, net.plan.chain_id, opts.senders, first, per_sender
    )
    stream_files, hashes = [], []
    for j, node in enumerate(live):
        stream = workload.interleave([signed[i] for i in range(opts.senders) if i % len(live) == j])
        path = work / f"stream-{node}.msgpack"
        path.write_bytes(msgpack.packb(stream, use_bin_type=True))
        stream_files.append(str(path))
        hashes.append([workload.tx_hash(t).hex() for t in stream])
    spec = {
        "nodes": [net.plan.nodes[i].api_url for i in live],
        "streams": stream_files,
        "rate": rate,
        "duration_s": opts.warmup_s + opts.duration_s,
        "started_file": str(work / "started"),
    }
    (work / "started").unlink(missing_ok=True)
    (work / "spec.json").write_text(json.dumps(spec))
    listener = CommitListener(net.plan.nodes[0].api_url)
    await listener.start()
    proc = await asyncio.create_subprocess_exec(*load_command(work), stdout=subprocess.DEVNULL)
    pids = {**net.running(), "load": proc.pid, "bench": os.getpid()}
    started = await _wait_started(work / "started", proc)
    drained = await keyrate.drain(net) if keyrate.starts_empty(opts.kms_rate) else None
    w0 = started + opts.warmup_s
    w1 = w0 + opts.duration_s
    await _sleep_until(w0)
    if opts.faults:
        for i in range(n - opts.faults, n):
            await asyncio.to_thread(net.kill, f"node{i}")
            pids.pop(f"node{i}", None)
    urls = {i: net.plan.nodes[i].api_url for i in live}
    s0 = await snapshot(urls)
    c0 = _cpu(pids)
    kms0 = await keyrate.kms_stock(net)
    w0 = s0.at
    profile: asyncio.Task[str | None] | None = None
    if opts.profile_leader_s > 0 and rate == max(opts.rates):
        profile = asyncio.create_task(_profile_leader(net, urls, opts, work))
    await _sleep_until(w1)
    s1 = await snapshot(urls)
    c1 = _cpu(pids)
    kms1 = await keyrate.kms_stock(net)
    w1 = s1.at
    try:
        await asyncio.wait_for(proc.wait(), opts.duration_s + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    load = json.loads((work / "load.json").read_text())
    await _drain(listener, load, hashes, w0, w1)
    await listener.stop()
    cpu = {k: (c0.get(k), c1.get(k)) for k in c0}
    fig = point_figures(
        offered_rate=rate,
        load=load,
        hashes=hashes,
        blocks=listener.blocks,
        txs=listener.txs,
        window=(w0, w1),
        cpu=cpu,
        snaps=(s0, s1),
        listener_node=0,
        ceiling_tx_s=float(limit["ceiling_tx_s"]),
    )
    fig["listener"] = {"reconnects": listener.reconnects, "missed_events": listener.gaps}
    fig["key_rate"] = keyrate.key_rate_figures(
        opts.kms_rate, (s0, s1), (kms0, kms1), fig["committed_txs"]
    )
    fig["key_rate"]["drained_at_load_start"] = drained
    idle_after = await measure_idle(net, opts.idle_s) if opts.faults else None
    prof_text = await profile if profile is not None else None
    return fig, idle_after, prof_text


async def _wait_started(started: Path, proc: asyncio.subprocess.Process) -> float:
    """The wall time of the load generator's first tick (it writes it once its streams
    are loaded); polled with a deadline."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return float(started.read_text())
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError("the load generator did not start")


async def _drain(
    listener: CommitListener,
    load: Mapping[str, Any],
    hashes: list[list[str]],
    w0: float,
    w1: float,
    timeout_s: float = 15.0,
) -> None:
    """Wait (bounded) until the window's accepted transactions have commit events."""
    wanted = [
        h
        for c in load["chunks"]
        if w0 <= c["scheduled"] <= w1 and c["accepted"] == c["count"]
        for h in hashes[c["node"]][c["offset"] : c["offset"] + c["count"]]
    ]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(h in listener.txs for h in wanted):
            return
        await asyncio.sleep(0.2)


async def _profile_leader(
    net: BenchNetwork, urls: Mapping[int, str], opts: Options, work: Path
) -> str | None:
    from devnet.bench.profile import profile_pid
    from qchain.client import AsyncClient

    async with AsyncClient(urls[0]) as c:
        leader = (await c.status()).get("leader")
    if not isinstance(leader, int):
        return None
    pid = net.pid(f"node{leader}")
    if pid is None:
        return None
    text = await asyncio.to_thread(profile_pid, pid, opts.profile_leader_s, work)
    return f"leader node{leader} (pid {pid}), {opts.profile_leader_s:.0f} s\n\n{text}"


# --- the run ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def _config(opts: Options) -> dict[str, Any]:
    return {
        "validators": opts.validators,
        "rates": list(opts.rates),
        "duration_s": opts.duration_s,
        "warmup_s": opts.warmup_s,
        "scheme": opts.scheme,
        "tx": opts.tx,
        "kms_rate": opts.kms_rate,
        "kms_stock": keyrate.stock_mode(opts.kms_rate),
        "faults": opts.faults,
        "heartbeat_ms": opts.heartbeat_ms,
        "profile": opts.profile,
        "senders": opts.senders,
        "baseline": opts.baseline,
    }


async def _bench(opts: Options) -> dict[str, Any]:
    limit = await asyncio.to_thread(measure_limit, opts.scheme, opts.tx, opts.validators)
    print(
        f"limit: verify {limit['verify_us']} µs, execute {limit['execute_us']} µs, "
        f"ceiling {limit['ceiling_tx_s']} tx/s on {limit['cores']} cores",
        flush=True,
    )
    hb = f"heartbeat {opts.heartbeat_ms} ms" if opts.heartbeat_ms else "heartbeat off"
    idle: dict[str, Any] = {}
    points: list[dict[str, Any]] = []
    profile_text: str | None = None
    work = opts.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    for k, rate in enumerate(opts.rates or (0.0,)):
        with devnet(opts) as net:
            if k == 0:
                idle[f"idle, {hb}"] = await measure_idle(net, opts.idle_s)
            if not opts.rates:
                break
            if opts.tx != "notary":
                await _submit_setup(net, opts)
            fig, idle_after, prof = await run_point(net, opts, rate, limit, work)
            points.append(fig)
            if idle_after is not None:
                idle[f"idle, {hb}, {opts.faults} crashed"] = idle_after
            profile_text = prof or profile_text
        print(
            f"offered {rate:g} tx/s: committed {fig['committed_tx_s']} tx/s, "
            f"p50 {fig['latency_ms']['p50']} ms, p99 {fig['latency_ms']['p99']} ms, "
            f"keys/block {fig['qkd']['keys_per_block']}",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    sat = max(points, key=lambda p: p["committed_tx_s"] or 0) if points else None
    frames = sat["qkd"]["frames_per_link_per_height"] if sat else None
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "config": _config(opts),
        "limit": limit,
        "idle": idle,
        "points": points,
        "saturation": sat,
        "profiles": profile_limits(frames),
        "notes": [],
    }
    if profile_text is not None:
        (opts.out / "leader-profile.txt").write_text(profile_text)
        report["leader_profile"] = "leader-profile.txt"
    return report


def run(args: argparse.Namespace) -> int:
    opts = Options.from_args(args)
    report = asyncio.run(_bench(opts))
    write_report(report, opts.out)
    print(f"report: {opts.out / 'report.md'}")
    return 0
