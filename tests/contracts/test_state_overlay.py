from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.state import Overlay, StateReader, StateWriter, write_set_to_batch
from qchain.store import Batch, MemoryStore

keys = st.binary(min_size=0, max_size=3)
ops = st.lists(st.tuples(keys, st.none() | st.binary(max_size=2)), max_size=30)


def store_with(items: list[tuple[bytes, bytes]]) -> MemoryStore:
    s = MemoryStore()
    for k, v in items:
        s.put(k, v)
    return s


def apply(model: dict[bytes, bytes], ov: Overlay, writes: list[tuple[bytes, bytes | None]]) -> None:
    for k, v in writes:
        if v is None:
            ov.delete(k)
            model.pop(k, None)
        else:
            ov.put(k, v)
            model[k] = v


@settings(max_examples=150, deadline=None)
@given(
    base=st.lists(st.tuples(keys, st.binary(max_size=2)), max_size=20),
    outer=ops,
    inner=ops,
    prefix=st.binary(max_size=1),
    start=st.none() | keys,
    reverse=st.booleans(),
)
def test_nested_overlay_matches_model(
    base: list[tuple[bytes, bytes]],
    outer: list[tuple[bytes, bytes | None]],
    inner: list[tuple[bytes, bytes | None]],
    prefix: bytes,
    start: bytes | None,
    reverse: bool,
) -> None:
    store = store_with(base)
    model = dict(base)
    block = Overlay(store)
    apply(model, block, outer)
    snapshot = dict(model)
    tx = block.child()
    apply(model, tx, inner)
    for src, m in ((tx, model), (block, snapshot)):
        expect = sorted(
            (
                (k, v)
                for k, v in m.items()
                if k.startswith(prefix)
                and (start is None or (k <= start if reverse else k >= start))
            ),
            reverse=reverse,
        )
        assert list(src.iterate(prefix, start=start, reverse=reverse)) == expect
        assert all(src.get(k) == m.get(k) for k, _ in base + [(k, b"") for k, _ in outer + inner])
    tx.merge_into(block)
    # the write set, applied to the store, gives the model; it has no no-op entries
    ws = block.changes()
    assert [k for k, _ in ws] == sorted(k for k, _ in ws)
    assert all(store.get(k) != v for k, v in ws)
    batch = Batch()
    write_set_to_batch(ws, batch)
    store.write(batch)
    assert dict(store.iterate()) == model


def test_dropped_child_leaves_no_write() -> None:
    store = store_with([(b"a", b"1")])
    block = Overlay(store)
    tx = block.child()
    tx.put(b"b", b"2")
    tx.delete(b"a")
    assert block.changes() == ()
    assert block.get(b"a") == b"1"


def test_restoring_a_value_is_no_change() -> None:
    block = Overlay(store_with([(b"a", b"1")]))
    block.put(b"a", b"2")
    block.put(b"a", b"1")
    block.delete(b"zz")
    assert block.changes() == ()


def test_merge_only_into_base() -> None:
    a, b = Overlay(MemoryStore()), Overlay(MemoryStore())
    try:
        a.child().merge_into(b)
    except ValueError:
        return
    raise AssertionError("merge into a foreign overlay must fail")


def test_apply_write_set() -> None:
    store = store_with([(b"a", b"1")])
    ov = Overlay(store)
    ov.apply(((b"a", None), (b"b", b"2")))
    assert dict(ov.iterate()) == {b"b": b"2"}


def test_scoped_views() -> None:
    ov = Overlay(MemoryStore())
    w = StateWriter(ov, "notary")
    w.put(b"k1", b"v")
    w.put_int(b"n", 7)
    StateWriter(ov, "notaryx").put(b"k2", b"other")
    r = StateReader(ov, "notary")
    assert list(r.iterate(b"k")) == [(b"k1", b"v")]
    assert r.get_int(b"n") == 7 and r.get_int(b"missing", 3) == 3
    assert r.has(b"k1") and not r.has(b"k2")
    w.delete(b"k1")
    assert r.get(b"k1") is None
