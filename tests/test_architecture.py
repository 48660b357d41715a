"""The house rules of docs/ARCHITECTURE.md, checked on the source tree.

- Imports point downward only: `qchain` imports no other package of the project;
  `consensus` and `contracts` import only `qchain`; `node` imports `qchain`, `consensus`
  and `contracts`; `devnet` may import all of them. A command group that lives above the
  core is registered in `qchain/cli.py` by module name and imported only when it runs,
  which is not a static import and is allowed.
- The protocol and the application do no I/O: no module of `consensus` or `contracts`
  imports a clock, the file system, sockets or an event loop (the simulator's command line,
  `consensus/sim/cli.py`, is a program and is exempt).
- Rooms stay small: no module over 600 lines and no function over 80 lines in `node/`,
  `consensus/`, `devnet/faults/` and `devnet/simnet/`.
- The validator's I/O is injectable: nothing in `node/` reads the wall clock, measures
  time, makes an OS-seeded generator or opens a connection except through the running
  loop (`qchain.clock`) and the transport's `StreamNet` (whose TCP default,
  `node/streamnet.py`, is the one exemption), so the whole-network simulator
  (docs/SIMULATION.md) runs it on virtual time. The offline tools (`qchain node
  backup|restore|rebuild`, the site, genesis and config commands) run no validator and are
  exempt.

Only static imports count (`import x`, `from x import y`, at any depth in a module), as
an upward edge hidden in a function body is still an upward edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("qchain", "consensus", "contracts", "node", "devnet")
ALLOWED: dict[str, frozenset[str]] = {
    "qchain": frozenset(),
    "consensus": frozenset({"qchain"}),
    "contracts": frozenset({"qchain"}),
    "node": frozenset({"qchain", "consensus", "contracts"}),
    "devnet": frozenset({"qchain", "consensus", "contracts", "node"}),
}
PURE = ("consensus", "contracts")
IO_MODULES = frozenset({"time", "datetime", "os", "pathlib", "socket", "asyncio", "shutil"})
PURE_EXEMPT = frozenset({"consensus/sim/cli.py"})
SIZE_CHECKED = ("node", "consensus", "devnet/faults", "devnet/simnet")
DIRECT_IO_CALLS = frozenset(
    {
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "time.perf_counter",
        "time.perf_counter_ns",
        "random.Random",
        "os.urandom",
        "asyncio.open_connection",
        "asyncio.start_server",
        "socket.socket",
        "socket.create_connection",
    }
)
DIRECT_IO_EXEMPT = frozenset(
    {
        "node/streamnet.py",
        "node/backup.py",
        "node/rebuild.py",
        "node/site.py",
        "node/nodeconfig.py",
        "node/cli_genesis.py",
    }
)
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def sources(*tops: str) -> Iterator[Path]:
    for top in tops:
        yield from sorted((ROOT / top).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every absolute module a tree imports, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def upward(package: str, tree: ast.AST) -> Iterator[tuple[int, str]]:
    """The imports of a module of `package` that point at a package it may not use."""
    for line, module in imported_modules(tree):
        top = module.split(".")[0]
        if top in PACKAGES and top != package and top not in ALLOWED[package]:
            yield line, module


def upward_edges() -> list[str]:
    return [
        f"{rel(path)}:{line} imports {module}"
        for package in PACKAGES
        for path in sources(package)
        for line, module in upward(package, ast.parse(path.read_text()))
    ]


def io_imports() -> list[str]:
    found = []
    for path in sources(*PURE):
        if rel(path) in PURE_EXEMPT:
            continue
        for line, module in imported_modules(ast.parse(path.read_text())):
            if module.split(".")[0] in IO_MODULES:
                found.append(f"{rel(path)}:{line} imports {module}")
    return found


def direct_io(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Uses of the wall clock, a timer, an unseeded generator or a socket, by dotted name:
    calls and references alike (a `time.monotonic` default argument reads the real clock
    too); `random.Random(seed)` with a seed is allowed."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Name):
            continue
        name = f"{node.value.id}.{node.attr}"
        if name in DIRECT_IO_CALLS and name != "random.Random":
            yield node.lineno, name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and f"{node.func.value.id}.{node.func.attr}" == "random.Random"
            and not node.args
        ):
            yield node.lineno, "random.Random"


def node_direct_io() -> list[str]:
    return [
        f"{rel(path)}:{line} calls {name}"
        for path in sources("node")
        if rel(path) not in DIRECT_IO_EXEMPT
        for line, name in direct_io(ast.parse(path.read_text()))
    ]


def oversized() -> list[str]:
    found = []
    for path in sources(*SIZE_CHECKED):
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            found.append(f"{rel(path)}: module of {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{rel(path)}:{node.lineno} {node.name}: {length} lines")
    return found


def test_imports_point_downward() -> None:
    assert upward_edges() == []


def test_protocol_and_application_do_no_io() -> None:
    assert io_imports() == []


def test_the_node_reads_time_and_opens_connections_only_through_injected_io() -> None:
    assert node_direct_io() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time\nx = time.monotonic()\n", ["time.monotonic"]),
        ("def f():\n    return int(time.time() * 1000)\n", ["time.time"]),
        ("rng = random.Random()\n", ["random.Random"]),
        ("rng = random.Random(7)\n", []),
        (
            "async def f():\n    await asyncio.open_connection('h', 1)\n",
            ["asyncio.open_connection"],
        ),
        ("from qchain import clock\nx = clock.monotonic()\n", []),
        ("def f(clock=time.monotonic):\n    return clock()\n", ["time.monotonic"]),
    ],
)
def test_the_direct_io_check_sees_a_clock_read(source: str, expected: list[str]) -> None:
    assert [name for _, name in direct_io(ast.parse(source))] == expected


def test_modules_and_functions_stay_small() -> None:
    assert oversized() == []


def test_no_reference_outside_the_repository() -> None:
    hits = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if not path.is_file() or parts[0] in {".git", ".venv", ".cache"} or "__pycache__" in parts:
            continue
        if path.suffix not in {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".cfg", ""}:
            continue
        text = path.read_text(errors="replace")
        if "../" + "shared" in text:
            hits.append(rel(path))
    assert hits == []


@pytest.mark.parametrize(
    ("package", "source", "expected"),
    [
        ("qchain", "from contracts import registry\n", True),
        ("contracts", "import node.runtime\n", True),
        ("consensus", "def f():\n    from contracts.state import X\n", True),
        ("node", "from consensus.engine import Engine\n", False),
        ("devnet", "import node.runtime\n", False),
    ],
)
def test_the_layering_check_sees_an_upward_edge(package: str, source: str, expected: bool) -> None:
    assert bool(list(upward(package, ast.parse(source)))) is expected
