"""The canonical codec: one byte string per value, and only that one.

qchain encodes everything that is hashed, signed, stored or sent with MessagePack under
strict rules, so that equal values always give equal bytes:

- only integers (in the 64-bit range), byte strings, text strings (valid Unicode: no lone
  surrogates), booleans, nil and arrays are allowed; maps, floats, extension types and
  timestamps are not;
- structs are arrays of their fields in declaration order (`Struct` below);
- integers, lengths and headers use their shortest form (MessagePack's own rule when
  packing);
- decoding enforces limits on total size, nesting depth and lengths, and then re-encodes the
  result and compares: any input whose bytes differ from the canonical encoding of what it
  decodes to (a non-minimal integer, a str8 header for a short string, trailing bytes) is
  rejected.

Every failure is a `CodecError`; decoding never raises anything else.

Structs are frozen dataclasses that inherit `Struct`. Field types come from the annotations:
`int`, `bool`, `bytes`, `str`, `X | None`, `tuple[X, ...]`, another `Struct`, or `Value` for
an arbitrary canonical value. `typing.Annotated` adds bounds: `Len(lo, hi)` for bytes, text
(in UTF-8 bytes) and tuples, `Range(lo, hi)` for integers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeAlias, Union

import msgpack
import msgspec

from qchain.errors import CodecError

Value: TypeAlias = int | bytes | str | bool | list["Value"] | tuple["Value", ...] | None

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


@dataclass(frozen=True)
class Limits:
    """Bounds applied while decoding untrusted bytes."""

    max_size: int = 8 * 1024 * 1024
    max_depth: int = 16
    max_bytes_len: int = 4 * 1024 * 1024
    max_str_len: int = 64 * 1024
    max_array_len: int = 100_000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Len:
    """Inclusive length bounds for bytes, text (UTF-8 bytes) and tuples."""

    lo: int = 0
    hi: int | None = None


@dataclass(frozen=True)
class Range:
    """Inclusive integer bounds."""

    lo: int = INT_MIN
    hi: int = INT_MAX


class _AnyValue:
    """Annotation marker: any canonical value."""


ANY_VALUE = _AnyValue()
AnyValue: TypeAlias = typing.Annotated[object, ANY_VALUE]

Hash32 = typing.Annotated[bytes, Len(32, 32)]
U8 = typing.Annotated[int, Range(0, 2**8 - 1)]
U16 = typing.Annotated[int, Range(0, 2**16 - 1)]
U32 = typing.Annotated[int, Range(0, 2**32 - 1)]
U64 = typing.Annotated[int, Range(0, 2**64 - 1)]
I64 = typing.Annotated[int, Range(-(2**63), 2**63 - 1)]


NOT_UNICODE = "text is not valid Unicode (it holds a lone surrogate)"


def is_unicode(s: str) -> bool:
    """Whether s is valid Unicode text, that is, has a UTF-8 encoding. A Python string may
    hold lone surrogates (U+D800..U+DFFF, e.g. from a JSON `\\ud800` escape), which
    have none: such text is refused wherever it would be encoded."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_value(v: object, depth: int, limits: Limits) -> None:
    if depth > limits.max_depth:
        raise CodecError(f"nesting deeper than {limits.max_depth}")
    t = type(v)
    if t is int:
        if not INT_MIN <= v <= INT_MAX:  # type: ignore[operator]
            raise CodecError("integer out of the 64-bit range")
    elif t is bytes:
        if len(v) > limits.max_bytes_len:  # type: ignore[arg-type]
            raise CodecError(f"byte string longer than {limits.max_bytes_len}")
    elif t is str:
        if len(v) > limits.max_str_len:  # type: ignore[arg-type]
            raise CodecError(f"text longer than {limits.max_str_len}")
        if not is_unicode(v):  # type: ignore[arg-type]
            raise CodecError(NOT_UNICODE)
    elif t is bool or v is None:
        pass
    elif t is list or t is tuple:
        if len(v) > limits.max_array_len:  # type: ignore[arg-type]
            raise CodecError(f"array longer than {limits.max_array_len}")
        if depth >= limits.max_depth:
            for item in v:  # type: ignore[attr-defined]
                _check_value(item, depth + 1, limits)
            return
        # The items' own checks inline for the common scalars, the same as the call.
        for item in v:  # type: ignore[attr-defined]
            ti = type(item)
            if ti is int:
                if not INT_MIN <= item <= INT_MAX:
                    raise CodecError("integer out of the 64-bit range")
            elif ti is bytes:
                if len(item) > limits.max_bytes_len:
                    raise CodecError(f"byte string longer than {limits.max_bytes_len}")
            elif ti is not bool and item is not None:
                _check_value(item, depth + 1, limits)
    else:
        raise CodecError(f"type {t.__name__} is not allowed in canonical encoding")


def encode_value(v: object, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Canonical bytes of a value made of ints, bytes, str, bool, None, lists and tuples."""
    _check_value(v, 0, limits)
    return _pack(v, limits)


_fast_pack = msgspec.msgpack.Encoder().encode


def _reference_pack(v: object) -> bytes:
    out: bytes = msgpack.packb(v, use_bin_type=True, strict_types=False)
    return out


def pack_checked(v: object) -> bytes:
    """The MessagePack bytes of a value already checked to hold only the allowed types (ints
    in range, bytes, valid text, booleans, nil, lists and tuples), which are its canonical
    encoding. msgspec's encoder gives for such values byte for byte what `msgpack.packb`
    gives, several times faster (tests/qchain/test_codec_fast.py compares the two); should
    it fail (it has a lower nesting limit), msgpack.packb decides."""
    try:
        return _fast_pack(v)
    except Exception:
        return _reference_pack(v)


def _pack(v: object, limits: Limits) -> bytes:
    try:
        out = pack_checked(v)
    except (OverflowError, ValueError, TypeError) as e:
        raise CodecError(f"cannot encode: {e}") from e
    if len(out) > limits.max_size:
        raise CodecError(f"encoding of {len(out)} bytes exceeds {limits.max_size}")
    return out


def decode_value(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Value:
    """Decode canonical bytes; raises `CodecError` for anything non-canonical."""
    v = unpack_canonical(data, limits)
    _check_value(v, 0, limits)
    return typing.cast(Value, v)


def unpack_canonical(data: bytes, limits: Limits) -> object:
    """msgpack decoding under limits, canonical (re-encodes to the same bytes), with no
    check of the value's types: the caller checks them."""
    if type(data) is not bytes:
        try:
            data = bytes(data)
        except TypeError as e:
            raise CodecError("input is not bytes") from e
    if len(data) > limits.max_size:
        raise CodecError(f"input of {len(data)} bytes exceeds {limits.max_size}")
    if not data:
        raise CodecError("empty input")
    try:
        v = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=limits.max_bytes_len,
            max_str_len=limits.max_str_len,
            max_array_len=limits.max_array_len,
            max_map_len=0,
            max_ext_len=0,
        )
    except msgpack.ExtraData as e:
        raise CodecError("trailing bytes after the value") from e
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        raise CodecError(f"malformed encoding: {type(e).__name__}") from e
    except Exception as e:  # the C unpacker raises a few undocumented types on garbage
        raise CodecError(f"malformed encoding: {type(e).__name__}") from e
    # What the unpacker returns (lists, an empty map, ints, floats, bytes, text, booleans,
    # nil) packs with msgspec as with msgpack.packb, except an empty extension value, which
    # msgspec packs as an array, and nesting past msgspec's limit: both differ from the
    # input or fail, and msgpack.packb then decides.
    try:
        if _fast_pack(v) == data:
            return v
    except Exception:  # the reference below decides
        pass
    try:
        again = _reference_pack(v)
    except (ValueError, TypeError, OverflowError) as e:
        raise CodecError(f"malformed encoding: {type(e).__name__}") from e
    if again != data:
        raise CodecError("non-canonical encoding")
    return v


# --- structs -----------------------------------------------------------------------------

_Conv = Callable[[object, str | None], object]
"""A field converter: (value, path) -> value. The path names the field in error messages;
None means "fast mode": no path is built, and `Struct.from_wire` retries with paths when
something fails, so error messages are the same either way."""


def _fail(path: str | None, msg: str) -> typing.NoReturn:
    raise CodecError(msg if path is None else f"{path}: {msg}")


def _wrong_type(path: str | None, expected: str, x: object) -> typing.NoReturn:
    _fail(path, f"expected {expected}, got {type(x).__name__}")


def _bounds(meta: Sequence[object]) -> tuple[Len | None, Range | None]:
    ln = next((m for m in meta if isinstance(m, Len)), None)
    rg = next((m for m in meta if isinstance(m, Range)), None)
    return ln, rg


def _check_len(n: int, ln: Len | None, path: str | None) -> None:
    if ln is not None and (n < ln.lo or (ln.hi is not None and n > ln.hi)):
        if ln.hi == ln.lo:
            _fail(path, f"length {n}, expected {ln.lo}")
        _fail(path, f"length {n} outside [{ln.lo}, {ln.hi}]")


def _make_conv(tp: Any, meta: Sequence[object] = ()) -> tuple[_Conv, _Conv]:
    """(to_wire, from_wire) converters for one annotated type."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(tp)
        return _make_conv(base, (*meta, *extra))
    ln, rg = _bounds(meta)
    if any(m is ANY_VALUE for m in meta):

        def any_from(x: object, path: str | None) -> object:
            try:
                _check_value(x, 0, DEFAULT_LIMITS)
            except CodecError as e:
                _fail(path, e.message)
            return x

        def any_to(x: object, path: str | None) -> object:
            _check_value(x, 0, DEFAULT_LIMITS)
            return x

        return any_to, any_from
    if tp is int:
        lo, hi = (rg.lo, rg.hi) if rg else (INT_MIN, INT_MAX)

        def int_conv(x: object, path: str | None) -> object:
            if type(x) is not int:
                _wrong_type(path, "integer", x)
            if not lo <= x <= hi:
                _fail(path, f"{x} outside [{lo}, {hi}]")
            return x

        return int_conv, int_conv
    if tp is bool:

        def bool_conv(x: object, path: str | None) -> object:
            if type(x) is not bool:
                _wrong_type(path, "boolean", x)
            return x

        return bool_conv, bool_conv
    if tp is bytes:

        def bytes_conv(x: object, path: str | None) -> object:
            if type(x) is not bytes:
                _wrong_type(path, "bytes", x)
            _check_len(len(x), ln, path)
            return x

        return bytes_conv, bytes_conv
    if tp is str:

        def str_conv(x: object, path: str | None) -> object:
            if type(x) is not str:
                _wrong_type(path, "text", x)
            ascii_ = x.isascii()
            if not ascii_ and not is_unicode(x):
                _fail(path, NOT_UNICODE)
            if ln is not None:
                n = len(x)
                if ascii_:
                    _check_len(n, ln, path)
                elif n < ln.lo or ln.hi is None or 4 * n > ln.hi:
                    _check_len(len(x.encode("utf-8")), ln, path)
            return x

        return str_conv, str_conv
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"only `X | None` unions are supported, got {tp}")
        inner_to, inner_from = _make_conv(args[0], meta)

        def opt_to(x: object, path: str | None) -> object:
            return None if x is None else inner_to(x, path)

        def opt_from(x: object, path: str | None) -> object:
            return None if x is None else inner_from(x, path)

        return opt_to, opt_from
    if origin is tuple:
        targs = typing.get_args(tp)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item_to, item_from = _make_conv(targs[0])

            def tup_to(x: object, path: str | None) -> object:
                if not isinstance(x, tuple | list):
                    _wrong_type(path, "a sequence", x)
                _check_len(len(x), ln, path)
                if path is None:
                    return [item_to(e, None) for e in x]
                return [item_to(e, f"{path}[{i}]") for i, e in enumerate(x)]

            def tup_from(x: object, path: str | None) -> object:
                if type(x) is not list:
                    _wrong_type(path, "array", x)
                _check_len(len(x), ln, path)
                if path is None:
                    return tuple([item_from(e, None) for e in x])
                return tuple(item_from(e, f"{path}[{i}]") for i, e in enumerate(x))

            return tup_to, tup_from
        convs = [_make_conv(a) for a in targs]

        def fixed_to(x: object, path: str | None) -> object:
            if not isinstance(x, tuple | list) or len(x) != len(convs):
                _fail(path, f"expected a {len(convs)}-tuple")
            return [
                c[0](e, None if path is None else f"{path}[{i}]")
                for i, (c, e) in enumerate(zip(convs, x, strict=True))
            ]

        def fixed_from(x: object, path: str | None) -> object:
            if type(x) is not list or len(x) != len(convs):
                _fail(path, f"expected an array of {len(convs)} items")
            return tuple(
                c[1](e, None if path is None else f"{path}[{i}]")
                for i, (c, e) in enumerate(zip(convs, x, strict=True))
            )

        return fixed_to, fixed_from
    if isinstance(tp, type) and issubclass(tp, Struct):
        struct_cls = tp

        def struct_to(x: object, path: str | None) -> object:
            if not isinstance(x, struct_cls):
                _fail(path, f"expected {struct_cls.__name__}")
            return x._to_wire(path)

        def struct_from(x: object, path: str | None) -> object:
            return struct_cls._from_wire(x, path)

        return struct_to, struct_from
    raise TypeError(f"type {tp!r} is not supported by the canonical codec")


# --- the compiled fast mode ----------------------------------------------------------
#
# The converters above are the reference. A struct's fast mode (the `path is None` case of
# `_to_wire` and `_from_wire`) is one generated function per direction that checks its
# integer, boolean, byte-string and text fields inline, with the same conditions as their
# converters, and calls the converters for every other field. It is conservative: text
# that is not ASCII is declined (its bound is in UTF-8 bytes). Whatever it declines or
# refuses raises a `CodecError`, and `to_wire` / `from_wire` then run the converters with
# paths, which decide: the result, or the error message, is always the reference's.


class _Declined(CodecError):
    """The fast mode does not vouch for a value; the converters decide."""


def _len_cond(v: str, ln: Len | None) -> str:
    if ln is None:
        return ""
    cond = f" and {ln.lo} <= len({v})" if ln.lo > 0 else ""
    return cond if ln.hi is None else f"{cond} and len({v}) <= {ln.hi}"


def _inline_check(v: str, tp: Any, meta: Sequence[object] = ()) -> str | None:
    """A condition on the local v that holds only if the converter of tp accepts v and
    returns it unchanged; None if tp is not checked inline."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(tp)
        return _inline_check(v, base, (*meta, *extra))
    if any(m is ANY_VALUE for m in meta):
        return None
    ln, rg = _bounds(meta)
    if tp is int:
        lo, hi = (rg.lo, rg.hi) if rg else (INT_MIN, INT_MAX)
        return f"(type({v}) is int and {lo} <= {v} <= {hi})"
    if tp is bool:
        return f"type({v}) is bool"
    if tp is bytes:
        return f"(type({v}) is bytes{_len_cond(v, ln)})"
    if tp is str:
        return f"(type({v}) is str and {v}.isascii(){_len_cond(v, ln)})"
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            inner = _inline_check(v, args[0], meta)
            return None if inner is None else f"({v} is None or {inner})"
    return None


_Fast = tuple[Callable[[Any], list[object]], Callable[[object], Any]]


def _plain_init(cls: type[Struct], names: Sequence[str]) -> bool:
    """Whether `cls(*values)` only stores each value in the instance dict under its field
    name (a dataclass-generated `__init__` over exactly these fields, no `__post_init__`,
    `__new__`, `__slots__`, `__setattr__` or descriptor in the way), so that the fast mode
    may build instances by filling their dict."""
    params = getattr(cls, "__dataclass_params__", None)
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    return (
        params is not None
        and params.init
        and code is not None
        and code.co_filename == "<string>"
        and tuple(f.name for f in dataclasses.fields(cls)) == tuple(names)  # type: ignore[arg-type]
        and not hasattr(cls, "__post_init__")
        and cls.__new__ is object.__new__
        and (params.frozen or cls.__setattr__ is object.__setattr__)
        and not any("__slots__" in c.__dict__ for c in cls.__mro__)
        and not any(hasattr(type(getattr(cls, n, None)), "__set__") for n in names)
    )


def _compile(cls: type[Struct]) -> _Fast:
    """(to_wire, from_wire) in fast mode for cls."""
    hints = typing.get_type_hints(cls, include_extras=True)
    spec = cls._spec()
    ns: dict[str, object] = {"_Declined": _Declined, "cls": cls}
    to = ["def to_wire(self):"]
    fr = [
        "def from_wire(obj):",
        f"    if type(obj) is not list or len(obj) != {len(spec)}:",
        "        raise _Declined('fields')",
    ]
    if spec:
        fr.append("    " + "".join(f"a{i}, " for i in range(len(spec))) + "= obj")
    for i, (name, to_conv, from_conv) in enumerate(spec):
        cond = _inline_check(f"a{i}", hints[name])
        if cond is None:
            ns[f"to{i}"], ns[f"fr{i}"] = to_conv, from_conv
            to.append(f"    a{i} = to{i}(self.{name}, None)")
            fr.append(f"    a{i} = fr{i}(a{i}, None)")
        else:
            to.append(f"    a{i} = self.{name}")
            for lines in (to, fr):
                lines.append(f"    if not {cond}:")
                lines.append(f"        raise _Declined({name!r})")
    args = ", ".join(f"a{i}" for i in range(len(spec)))
    to.append(f"    return [{args}]")
    if _plain_init(cls, [name for name, _, _ in spec]):
        ns["_new"] = object.__new__
        fr += ["    self = _new(cls)", "    d = self.__dict__"]
        fr += [f"    d[{name!r}] = a{i}" for i, (name, _, _) in enumerate(spec)]
        fr.append("    return self")
    else:
        fr.append(f"    return cls({args})")
    exec("\n".join(to) + "\n\n" + "\n".join(fr), ns)  # source built above from the hints
    return typing.cast(_Fast, (ns["to_wire"], ns["from_wire"]))


class Struct:
    """Base for frozen dataclasses that encode as a fixed-order array of their fields."""

    _wire_spec: ClassVar[tuple[tuple[str, _Conv, _Conv], ...] | None] = None
    _wire_fast: ClassVar[_Fast | None] = None
    _cache_encoding: ClassVar[bool] = False
    """Set by a struct whose values are never changed after construction and whose
    encoding is asked for repeatedly: `encode` then keeps the bytes on the instance."""

    @classmethod
    def _spec(cls) -> tuple[tuple[str, _Conv, _Conv], ...]:
        spec = cls.__dict__.get("_wire_spec")
        if spec is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            spec = tuple(
                (f.name, *_make_conv(hints[f.name]))
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.init
            )
            cls._wire_spec = spec
        return spec

    @classmethod
    def _fast(cls) -> _Fast:
        fast = cls.__dict__.get("_wire_fast")
        if fast is None:
            fast = _compile(cls)
            cls._wire_fast = fast
        return fast

    def to_wire(self) -> list[object]:
        """The struct as a plain array value, fields in declaration order."""
        try:
            return self._to_wire(None)
        except CodecError:
            return self._to_wire(type(self).__name__)

    def _to_wire(self, path: str | None) -> list[object]:
        if path is None:
            return self._fast()[0](self)
        return [to(getattr(self, f), f"{path}.{f}") for f, to, _ in self._spec()]

    @classmethod
    def from_wire(cls, obj: object, path: str | None = None) -> Self:
        """Build the struct from an array value, checking every field (an `AnyValue`
        field as `encode_value` checks a value)."""
        if path is None:
            try:
                return cls._from_wire(obj, None)
            except CodecError:
                path = cls.__name__
        return cls._from_wire(obj, path)

    @classmethod
    def _from_wire(cls, obj: object, path: str | None) -> Self:
        if path is None:
            return typing.cast(Self, cls._fast()[1](obj))
        spec = cls._spec()
        if type(obj) is not list:
            _wrong_type(path, "array", obj)
        if len(obj) != len(spec):
            _fail(path, f"expected {len(spec)} fields, got {len(obj)}")
        return cls(*[fr(x, f"{path}.{f}") for (f, _, fr), x in zip(spec, obj, strict=True)])

    def encode(self) -> bytes:
        """Canonical bytes of this struct."""
        enc: bytes | None = self.__dict__.get("_encoded") if self._cache_encoding else None
        if enc is None:
            # to_wire checked every field's type and bounds (an AnyValue field with
            # _check_value), so the value needs no second walk before packing.
            enc = _pack(self.to_wire(), DEFAULT_LIMITS)
            if self._cache_encoding:
                self.__dict__["_encoded"] = enc
        return enc

    @classmethod
    def decode(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> Self:
        """Parse canonical bytes; raises `CodecError` on any deviation. The struct's
        fields check the types, so the input is not walked a second time (an `AnyValue`
        field is checked against the default limits)."""
        return cls.from_wire(unpack_canonical(data, limits))
