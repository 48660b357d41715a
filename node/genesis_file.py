"""The genesis file on disk: `load_genesis` reads and validates one, `save_genesis`
writes one. The format and its checks are `contracts.genesis`'s; this module only moves
its JSON text between the file and `parse_genesis` / `Genesis.to_json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from contracts.genesis import Genesis, parse_genesis
from qchain.errors import GenesisError


def load_genesis(path: Path) -> Genesis:
    """Read and validate a genesis file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise GenesisError(str(path), f"cannot read: {e.strerror}") from e
    except ValueError as e:
        raise GenesisError(str(path), f"not valid JSON: {e}") from e
    return parse_genesis(doc)


def save_genesis(genesis: Genesis, path: Path) -> None:
    """Write genesis to path (creating its directory), in the format `load_genesis` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(genesis.to_json(), indent=2) + "\n", encoding="utf-8")
