"""The `qchain` command line: keys new|show, tx build|sign|decode, errors, help."""

from __future__ import annotations

import argparse
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qchain.cli import COMMANDS, build_parser, main
from qchain.keys import SigningKey
from qchain.types import decode_transaction

QCHAIN = Path(sys.executable).parent / "qchain"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("scheme", ["ed25519", "ml-dsa-65", "sm2"])
def test_keys_new_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str], scheme: str) -> None:
    path = tmp_path / "k.json"
    rc, out, _ = _run(capsys, "keys", "new", "--out", str(path), "--scheme", scheme, "--json")
    assert rc == 0
    info = json.loads(out)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = SigningKey.load(path)
    assert info == {
        "file": str(path),
        "scheme": scheme,
        "address": key.address.hex(),
        "public_key": key.public_key.hex(),
    }
    rc, out, _ = _run(capsys, "keys", "show", str(path))
    assert rc == 0
    assert f"address:    {key.address.hex()}" in out
    assert scheme in out
    rc, out, _ = _run(capsys, "keys", "show", str(path), "--json")
    assert json.loads(out) == info


def test_keys_new_refuses_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "k.json"
    assert _run(capsys, "keys", "new", "--out", str(path), "--scheme", "ed25519")[0] == 0
    before = path.read_text()
    rc, _, err = _run(capsys, "keys", "new", "--out", str(path), "--scheme", "ed25519")
    assert rc == 1
    assert "exists" in err and "--force" in err
    assert path.read_text() == before
    rc, _, _ = _run(capsys, "keys", "new", "--out", str(path), "--scheme", "ed25519", "--force")
    assert rc == 0
    assert path.read_text() != before


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "alice.json"
    from qchain.keys import dev_key

    dev_key("cli", "alice", "ed25519").save(path)
    return path


@pytest.fixture
def mldsa_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "bob.json"
    from qchain.keys import dev_key

    dev_key("cli", "bob", "ml-dsa-65").save(path)
    return path


@pytest.fixture
def sm2_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "carol.json"
    from qchain.keys import dev_key

    dev_key("cli", "carol", "sm2").save(path)
    return path


def _build(capsys: pytest.CaptureFixture[str], key: Path, *extra: str) -> str:
    rc, out, err = _run(
        capsys,
        "tx",
        "build",
        "--chain-id",
        "cli-chain",
        "--key",
        str(key),
        "--nonce",
        "4",
        "--contract",
        "registry",
        "--method",
        "put",
        "--args",
        '["name", 7, {"hex": "beef"}, [true, null]]',
        *extra,
    )
    assert rc == 0, err
    return out.strip()


@pytest.mark.parametrize("which", ["key_file", "mldsa_key_file", "sm2_key_file"])
def test_tx_build_sign_decode_round_trip(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    key_path: Path = request.getfixturevalue(which)
    key = SigningKey.load(key_path)
    unsigned_hex = _build(capsys, key_path)
    unsigned = decode_transaction(bytes.fromhex(unsigned_hex))
    assert unsigned.signature == b"" and unsigned.sender == key.address
    assert unsigned.args == ["name", 7, b"\xbe\xef", [True, None]]

    rc, signed_hex, err = _run(capsys, "tx", "sign", unsigned_hex, "--key", str(key_path))
    assert rc == 0, err
    signed = decode_transaction(bytes.fromhex(signed_hex.strip()))
    signed.verify_signature(key.public_key)

    rc, out, _ = _run(capsys, "tx", "decode", signed_hex.strip())
    assert rc == 0
    doc = json.loads(out)
    assert doc["hash"] == signed.hash.hex()
    assert doc["args"] == ["name", 7, {"hex": "beef"}, [True, None]]
    assert doc["signature"] == signed.signature.hex()

    # Files of raw bytes and files of hex work as input too; --out writes raw bytes.
    raw = tmp_path / "signed.bin"
    rc, out, _ = _run(capsys, "tx", "sign", unsigned_hex, "--key", str(key_path), "--out", str(raw))
    assert rc == 0 and str(raw) in out
    assert decode_transaction(raw.read_bytes()).sender == key.address
    hex_file = tmp_path / "signed.hex"
    hex_file.write_text("0x" + signed_hex.strip() + "\n")
    for source in (raw, hex_file):
        rc, out, _ = _run(capsys, "tx", "decode", str(source))
        assert rc == 0
        assert json.loads(out)["sender"] == key.address.hex()


def test_tx_decode_from_stdin(
    key_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    unsigned_hex = _build(capsys, key_file)
    monkeypatch.setattr(sys, "stdin", io.StringIO(unsigned_hex + "\n"))
    rc, out, _ = _run(capsys, "tx", "decode", "-")
    assert rc == 0
    assert json.loads(out)["nonce"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tx", "decode", "zz"], "error:"),
        (["tx", "decode", "c0"], "error:"),
        (["tx", "decode", "ab" * 3000], "error:"),
        (["tx", "decode", "/nonexistent/dir/tx.bin"], "error:"),
        (["keys", "show", "/nonexistent/key.json"], "cannot read key file"),
    ],
)
def test_bad_input_exits_1_with_a_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rc, _, err = _run(capsys, *argv)
    assert rc == 1
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--args", "not json"], "--args is not JSON"),
        (["--args", "[" * 10_000], "--args: arrays and objects nested deeper than 64"),
        (["--args", '["\\ud800"]'], "--args at /0: text holds a lone surrogate"),
        (["--args", "[NaN]"], "--args at /0: NaN is not a JSON number"),
        (["--args", '{"a": 1}'], "--args must be a JSON array"),
        (["--args", "[1.5]"], "float"),
        (["--args", '[{"hex": "xyz"}]'], "hex"),
        (["--expiry-height", "-1"], "expiry_height"),
    ],
)
def test_tx_build_bad_input(
    key_file: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    rc, _, err = _run(
        capsys,
        "tx",
        "build",
        "--chain-id",
        "c",
        "--key",
        str(key_file),
        "--nonce",
        "1",
        "--contract",
        "x",
        "--method",
        "y",
        *extra,
    )
    assert rc == 1
    assert err.startswith("error:") and message in err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for group in ("keys", "tx"):
        assert group in out
    assert main([]) == 2


def test_console_script_round_trip(tmp_path: Path) -> None:
    """One real run of the installed `qchain` script: keys new, tx build | sign | decode."""
    key = tmp_path / "k.json"

    def run(*argv: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [str(QCHAIN), *argv], input=stdin, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "keys" in run("--help")
    run("keys", "new", "--out", str(key), "--scheme", "ml-dsa-65")
    built = run(
        "tx", "build", "--chain-id", "c", "--key", str(key), "--nonce", "1",
        "--contract", "x", "--method", "y", "--args", "[1]",
    )  # fmt: skip
    signed = run("tx", "sign", "-", "--key", str(key), stdin=built)
    doc = json.loads(run("tx", "decode", signed.strip()))
    assert doc["scheme"] == "ml-dsa-65" and doc["args"] == [1]
    bad = subprocess.run([str(QCHAIN), "tx", "decode", "00"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error:")


def _command_paths() -> list[tuple[str, ...]]:
    """Every `qchain` command and sub-command, found by walking the argparse tree (each
    group's module is loaded the way `main` loads it: when the group is named)."""
    paths: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        paths.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))

    for group in COMMANDS:
        top = build_parser([group])
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
        walk(sub.choices[group], (group,))
    return paths


def test_help_of_every_command_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` formats every help string; a stray `%` in one crashes argparse."""
    paths = _command_paths()
    assert len(paths) > len(COMMANDS), "the walk found no sub-commands"
    failed: list[str] = []
    for path in [(), *paths]:
        name = " ".join(("qchain", *path))
        try:
            main([*path, "--help"])
        except SystemExit as e:
            out = capsys.readouterr().out
            if e.code != 0 or "usage:" not in out:
                failed.append(f"{name}: exit {e.code}")
        except Exception as e:
            capsys.readouterr()
            failed.append(f"{name}: {type(e).__name__}: {e}")
        else:
            failed.append(f"{name}: --help did not exit")
    assert not failed, "\n".join(failed)
