"""TFRecord files and ``tf.train.Example`` messages without TensorFlow.

A TFRecord file is a sequence of records, each framed as (the format TensorFlow writes)

    uint64 length (little endian) | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data

and every check is made: a torn file (a record cut short) and a CRC mismatch are ``RecordError``s
naming the file and the record's byte offset, never a silent short read.

``parse_example`` decodes a serialized ``tf.train.Example`` by its published schema
(tensorflow/core/example/{example,feature}.proto):

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

into {key: list[bytes] | float32 array | int64 array}.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterator

import numpy as np

_MASK_DELTA = 0xA282EAD8


class RecordError(ValueError):
    """A TFRecord that is torn or fails its CRC, or a message that does not parse."""


def masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _header(f: BinaryIO, where: str, offset: int) -> int | None:
    """The length of the record at ``offset`` (None at a clean end of file)."""
    head = f.read(12)
    if not head:
        return None
    if len(head) < 12:
        err = RecordError(f"{where}: torn record at byte {offset} (a {len(head)}-byte header)")
        raise err
    length, crc = struct.unpack("<QI", head)
    if masked_crc(head[:8]) != crc:
        raise RecordError(f"{where}: length CRC mismatch at byte {offset}")
    return length


def scan(f: BinaryIO, where: str) -> list[tuple[int, int]]:
    """(offset, length) of every record, reading only the headers (the data is skipped); the
    last record's end is checked against the file's size. A torn file raises ``RecordError``
    with the whole records before the tear as its ``records``."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    out, offset = [], 0
    while True:
        length = _header(f, where, offset)
        if length is None:
            return out
        end = offset + 12 + length + 4
        if end > size:
            err = RecordError(f"{where}: torn record at byte {offset} ({length} data bytes and a 4-byte CRC "
                              f"announced, {size - offset - 12} bytes left)")
            err.records = out  # the whole records before the tear
            raise err
        out.append((offset, length))
        f.seek(end)
        offset = end


def read_at(f: BinaryIO, offset: int, where: str) -> bytes:
    """The data of the record at ``offset``, both CRCs checked."""
    f.seek(offset)
    length = _header(f, where, offset)
    if length is None:
        raise RecordError(f"{where}: no record at byte {offset}")
    data = f.read(length)
    tail = f.read(4)
    if len(data) < length or len(tail) < 4:
        raise RecordError(f"{where}: torn record at byte {offset} ({len(data)} of {length} data bytes)")
    if masked_crc(data) != struct.unpack("<I", tail)[0]:
        raise RecordError(f"{where}: data CRC mismatch in the record at byte {offset}")
    return data


def iter_records(f: BinaryIO, where: str) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of every record in order, checked."""
    for offset, _ in scan(f, where):
        yield offset, read_at(f, offset, where)


def write_record(f: BinaryIO, data: bytes) -> None:
    """Append one record (tests and tools write TFRecords with it)."""
    head = struct.pack("<Q", len(data))
    f.write(head + struct.pack("<I", masked_crc(head)) + data + struct.pack("<I", masked_crc(data)))


# --- protobuf wire format -----------------------------------------------------------------------
def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise RecordError("message ends inside a varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise RecordError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value): an int for varints, a memoryview for length-delimited."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > n:
                raise RecordError(f"field {num}: {length} bytes announced, {n - i} left")
            value, i = buf[i : i + length], i + length
        elif wire == 5:
            value, i = bytes(buf[i : i + 4]), i + 4
        elif wire == 1:
            value, i = bytes(buf[i : i + 8]), i + 8
        else:
            raise RecordError(f"field {num}: unsupported wire type {wire}")
        yield num, wire, value


def _int64s(value, wire: int) -> list[int]:
    if wire == 0:
        return [value - (1 << 64) if value >= 1 << 63 else value]
    out, i = [], 0
    while i < len(value):
        v, i = _varint(value, i)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _feature(buf: memoryview):
    for num, wire, value in _fields(buf):
        if num == 1 and wire == 2:  # BytesList
            return [bytes(v) for n, w, v in _fields(value) if n == 1 and w == 2]
        if num == 2 and wire == 2:  # FloatList: packed (or, from old writers, one fixed32 per value)
            parts = [np.frombuffer(v, "<f4") for n, w, v in _fields(value) if n == 1]
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if num == 3 and wire == 2:  # Int64List
            vals = [x for n, w, v in _fields(value) if n == 1 for x in _int64s(v, w)]
            return np.asarray(vals, dtype=np.int64)
    return []  # a Feature with no kind set: an empty list


def parse_example(data: bytes) -> dict[str, object]:
    """A serialized tf.train.Example -> {key: list of bytes | float32 array | int64 array}."""
    out: dict[str, object] = {}
    for num, wire, features in _fields(memoryview(data)):
        if num != 1 or wire != 2:
            continue
        for n, w, entry in _fields(features):
            if n != 1 or w != 2:
                continue
            key, value = None, memoryview(b"")
            for en, ew, ev in _fields(entry):
                if en == 1 and ew == 2:
                    key = bytes(ev).decode("utf-8")
                elif en == 2 and ew == 2:
                    value = ev
            if key is None:
                raise RecordError("a feature map entry without a key")
            out[key] = _feature(value)
    return out


def _len_field(num: int, payload: bytes) -> bytes:
    return _enc_varint((num << 3) | 2) + _enc_varint(len(payload)) + payload


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def serialize_example(features: dict[str, object]) -> bytes:
    """{key: list of bytes | float array | int array} -> a serialized tf.train.Example (the
    inverse of ``parse_example``; tests write records with it)."""
    entries = b""
    for key, value in features.items():
        if isinstance(value, (list, tuple)) and all(isinstance(v, (bytes, bytearray)) for v in value):
            feat = _len_field(1, b"".join(_len_field(1, bytes(v)) for v in value))
        else:
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                feat = _len_field(2, _len_field(1, arr.astype("<f4").tobytes()))
            else:
                feat = _len_field(3, _len_field(1, b"".join(_enc_varint(int(v)) for v in arr.reshape(-1))))
        entries += _len_field(1, _len_field(1, key.encode()) + _len_field(2, feat))
    return _len_field(1, entries)
