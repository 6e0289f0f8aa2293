"""Owns sort order: the order-preserving binary encoding of values (index keys and cursors).

The order across types is::

    missing < None < numbers < False < True < str < bytes < list < dict

Among numbers, ints and floats compare numerically, as Python compares them (``2 == 2.0``);
NaN sorts above +inf and ``-0.0`` equals ``0.0``. Strings order by code point, bytes
lexicographically, lists element by element (a prefix first), dicts by their sorted items.

Invariant: for values ``a`` and ``b``, ``encode(a) < encode(b)`` exactly when ``a`` sorts before
``b`` in the order above, and the encoding is self-delimiting, so the encoding of a tuple is the
concatenation of its elements' encodings and a tuple prefix is a byte prefix.

Also owns the storage form of documents (msgpack), which need not preserve order.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack

from core.errors import InvalidValueError

MISSING = object()
"""Marker for a field a document does not have (sorts below ``None``)."""

_T_MISSING = 0x01
_T_NONE = 0x02
_T_NUMBER = 0x10
_T_FALSE = 0x20
_T_TRUE = 0x21
_T_STR = 0x30
_T_BYTES = 0x40
_T_LIST = 0x50
_T_DICT = 0x60
_END = b"\x00"
_STR_END = b"\x00\x00"

_pack_d = struct.Struct(">d").pack
_unpack_q = struct.Struct(">Q").unpack
_pack_Q = struct.Struct(">Q").pack
_unpack_d = struct.Struct(">d").unpack
_pack_H = struct.Struct(">H").pack
_SIGN = 1 << 63
_MASK = (1 << 64) - 1
_NAN = b"\x7f\xf8" + b"\x00" * 6
_NAN_BITS = int.from_bytes(_NAN, "big")
_EXACT = 1 << 53
"""Every int of at most this magnitude is a float exactly."""


def _float_bits(f: float) -> bytes:
    """Big-endian bits of ``f`` transformed so unsigned byte order equals numeric order."""
    # + 0.0 folds -0.0 into 0.0; every NaN encodes as the one canonical NaN.
    n = int.from_bytes(_pack_d(f + 0.0), "big") if f == f else _NAN_BITS
    return (n ^ _MASK if n & _SIGN else n | _SIGN).to_bytes(8, "big")


def _number(v: int | float) -> bytes:
    if type(v) is float:
        return b"\x10" + _float_bits(v) + b"\x80\x00"
    f = float(v)
    # Rounding to float is monotone, so (float(v), v - int(float(v))) orders ints exactly; the
    # residual of a 64-bit int is within +-1024, well inside the 16-bit offset.
    return b"\x10" + _float_bits(f) + _pack_H(v - int(f) + 0x8000)


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + _STR_END


_SMALL_INTS: tuple[bytes, ...] = tuple(_number(i) for i in range(-128, 1024))
"""Encodings of the small ints that fill index keys (shards, counts, flags as numbers)."""


def encode_value(v: Any) -> bytes:
    """Encode one value so that byte order equals value order."""
    t = type(v)
    if t is int and -128 <= v < 1024:
        small: int = v + 128
        return _SMALL_INTS[small]
    if t is float or t is int and -_EXACT <= v <= _EXACT:
        # ``_number`` inlined for floats and the ints a float holds exactly (no residual).
        f = v + 0.0
        n = int.from_bytes(_pack_d(f), "big") if f == f else _NAN_BITS
        return b"\x10" + (n ^ _MASK if n & _SIGN else n | _SIGN).to_bytes(8, "big") + b"\x80\x00"
    if t is int:
        return _number(v)
    if t is str or isinstance(v, str):  # ids are a str subclass
        raw: bytes = v.encode("utf-8", "surrogatepass")
        if b"\x00" in raw:
            raw = raw.replace(b"\x00", b"\x00\xff")
        return b"\x30" + raw + b"\x00\x00"
    if v is None:
        return b"\x02"
    if t is bool:
        return b"\x21" if v else b"\x20"
    if t is bytes:
        return b"\x40" + _escape(v)
    if v is MISSING:
        return b"\x01"
    if t is list or t is tuple:
        return b"\x50" + b"".join(encode_value(x) for x in v) + _END
    if t is dict:
        parts = [encode_value(k) + encode_value(x) for k, x in sorted(v.items())]
        return b"\x60" + b"".join(parts) + _END
    if isinstance(v, int):
        return _number(int(v))
    raise InvalidValueError(f"Value of type {type(v).__name__} cannot be used in an index key.")


def encode_suffix(creation_time: Any, doc_id: str) -> bytes:
    """``encode_value(creation_time) + encode_value(doc_id)``: how every b-tree key ends."""
    if type(creation_time) is float and creation_time == creation_time and doc_id.isascii():
        n = int.from_bytes(_pack_d(creation_time + 0.0), "big")
        bits = (n ^ _MASK if n & _SIGN else n | _SIGN).to_bytes(8, "big")
        raw = doc_id.encode("ascii")
        if b"\x00" not in raw:
            return b"\x10" + bits + b"\x80\x00\x30" + raw + b"\x00\x00"
    return encode_value(creation_time) + encode_value(doc_id)


def encode_key(values: tuple[Any, ...] | list[Any]) -> bytes:
    """Encode a tuple of values; a prefix of the tuple encodes to a prefix of the bytes."""
    return b"".join([encode_value(v) for v in values])


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``prefix``.

    Returns ``None`` when there is none (the prefix is empty or all 0xff): the range is
    unbounded above.
    """
    p = prefix.rstrip(b"\xff")
    if not p:
        return None
    return p[:-1] + bytes((p[-1] + 1,))


def decode_key(data: bytes) -> tuple[Any, ...]:
    """Decode a key made by ``encode_key`` back into its values."""
    out = []
    pos = 0
    while pos < len(data):
        v, pos = _decode(data, pos)
        out.append(v)
    return tuple(out)


def _decode_escaped(data: bytes, pos: int) -> tuple[bytes, int]:
    buf = bytearray()
    while True:
        i = data.index(b"\x00", pos)
        buf += data[pos:i]
        if data[i + 1] == 0xFF:
            buf.append(0)
            pos = i + 2
        else:
            return bytes(buf), i + 2


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    tag = data[pos]
    pos += 1
    if tag == _T_NONE:
        return None, pos
    if tag == _T_MISSING:
        return MISSING, pos
    if tag == _T_FALSE:
        return False, pos
    if tag == _T_TRUE:
        return True, pos
    if tag == _T_NUMBER:
        (n,) = _unpack_q(data[pos : pos + 8])
        n = n ^ _SIGN if n & _SIGN else n ^ _MASK
        (f,) = _unpack_d(_pack_Q(n))
        residual = int.from_bytes(data[pos + 8 : pos + 10], "big") - 0x8000
        pos += 10
        if residual or data[pos - 2 : pos] != b"\x80\x00":
            return int(f) + residual, pos
        return f, pos
    if tag == _T_STR:
        raw, pos = _decode_escaped(data, pos)
        return raw.decode("utf-8", "surrogatepass"), pos
    if tag == _T_BYTES:
        return _decode_escaped(data, pos)
    if tag == _T_LIST:
        items = []
        while data[pos] != 0:
            item, pos = _decode(data, pos)
            items.append(item)
        return items, pos + 1
    if tag == _T_DICT:
        obj = {}
        while data[pos] != 0:
            k, pos = _decode(data, pos)
            obj[k], pos = _decode(data, pos)
        return obj, pos + 1
    raise ValueError(f"Corrupt key: unknown tag {tag:#x} at byte {pos - 1}")


def _type_rank(v: Any) -> int:
    if v is MISSING:
        return 0
    if v is None:
        return 1
    if isinstance(v, bool):
        return 3
    if isinstance(v, (int, float)):
        return 2
    if isinstance(v, str):
        return 4
    if isinstance(v, bytes):
        return 5
    if isinstance(v, (list, tuple)):
        return 6
    return 7


def compare_values(a: Any, b: Any) -> int:
    """Compare two values in the documented total order: -1, 0 or 1 (a reference for tests)."""
    ra, rb = _type_rank(a), _type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 2:
        a_nan, b_nan = isinstance(a, float) and math.isnan(a), isinstance(b, float) and b != b
        if a_nan or b_nan:
            return (a_nan > b_nan) - (a_nan < b_nan)
        return int(a > b) - int(a < b)
    if ra == 6:
        for x, y in zip(a, b, strict=False):
            c = compare_values(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra == 7:
        return compare_values(
            [x for kv in sorted(a.items()) for x in kv], [x for kv in sorted(b.items()) for x in kv]
        )
    if ra <= 1:
        return 0
    return int(a > b) - int(a < b)


# --- storage form of documents -------------------------------------------------------------

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def dump_document(doc: dict[str, Any]) -> bytes:
    """Serialize a document (or any value) for storage."""
    return _packb(doc)


def load_document(data: bytes) -> Any:
    """Deserialize what ``dump_document`` wrote."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True)
