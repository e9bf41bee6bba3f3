"""The loopfd wire format, version 1 (protocol/PROTOCOL.md is normative).

Every message is a 16-byte little-endian header followed by a body of an
exact size.  This module only turns bytes into values and back; it does no
I/O.  Decoding never trusts a length from the message beyond the header's
body_len, which must equal what arrived.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = 0x4446504C  # b"LPFD" on the wire
VERSION = 1
HEADER_SIZE = 16
MAX_MSG = 8192  # every request, and every reply but RELEASE_BATCH's
MAX_BATCH = 64  # entries in one ATTACH_BATCH or RELEASE_BATCH
MAX_REPLY = 16408  # a RELEASE_BATCH reply with 64 outcomes: receive into this
MAX_DEVICES = 64  # per session, the protocol's hard cap
MSG_TEXT = 240
MAX_TIMEOUT_MS = 600000

OP_HELLO = 1
OP_ATTACH = 2
OP_RELEASE = 3
OP_LIST = 4
OP_ATTACH_BATCH = 5  # only where HELLO's features have FEAT_BATCH
OP_RELEASE_BATCH = 6
REPLY = 0x80
OP_ERROR = 0xFF

# Attach flags (request) and effective flags (device record).
READ_ONLY = 0x01
PARTSCAN = 0x02
DIRECT_IO = 0x04
GRANT = 0x08
ATTACH_REQ_MASK = 0x0F
AUTOCLEAR = 0x10  # effective flag only: always set

# HELLO features: what the policy allows this caller.
FEAT_GRANT = 0x01
FEAT_PARTSCAN = 0x02
FEAT_DIRECT_IO = 0x04
FEAT_BATCH = 0x08  # the helper has ATTACH_BATCH and RELEASE_BATCH (any policy)

# HELLO mode: how the helper was started.
MODE_SETUID = 1
MODE_LISTEN = 2
MODE_SYSTEMD = 3

_HEADER = struct.Struct("<IHHII")
_HELLO_REQ = struct.Struct("<HHI")
_HELLO_REP = struct.Struct("<HHIIIII")
_ATTACH_REQ = struct.Struct("<IIQQQ")
_DEVICE = struct.Struct("<IIIIQQIIQQQQ")
_RELEASE = struct.Struct("<II")
_LIST_HEAD = struct.Struct("<II")
_BATCH_HEAD = struct.Struct("<II")  # count, reserved (or timeout_ms)
_OUTCOME = struct.Struct("<IIiI240s")  # id, reason, errno, waited_ms, text
_ERROR_HEAD = struct.Struct("<iI")
ERROR_SIZE = _ERROR_HEAD.size + MSG_TEXT


class Reason(enum.IntEnum):
    """The helper's reason codes (PROTOCOL.md, ERROR)."""

    NONE = 0
    MALFORMED = 1
    VERSION = 2
    UNKNOWN_OP = 3
    NO_HELLO = 4
    FD_COUNT = 5
    CONTROL = 6
    NOT_AUTHORIZED = 7
    CONFIG = 8
    FORBIDDEN_OPTION = 9
    BAD_OPTION = 10
    BACKING_KIND = 11
    BACKING_ACCESS = 12
    BACKING_FS = 13
    BACKING_LOOP = 14
    QUOTA_USER = 15
    QUOTA_GLOBAL = 16
    QUOTA_SESSION = 17
    NO_DEVICE = 18
    KERNEL = 19
    UNKNOWN_DEVICE = 20
    DEVICE_CHANGED = 21
    DATA_LOST = 22
    BUSY = 23


class DecodeError(ValueError):
    """Bytes that are not a valid version-1 message."""


@dataclass(frozen=True)
class HelloReply:
    """The HELLO reply body."""

    version: int
    mode: int
    features: int
    max_devices: int
    max_timeout_ms: int
    uid: int
    gid: int


@dataclass(frozen=True)
class DeviceRecord:
    """The 72-byte device record of an ATTACH reply or a LIST entry."""

    id: int
    index: int
    major: int
    minor: int
    diskseq: int
    size: int
    flags: int
    sector_size: int
    offset: int
    sizelimit: int
    backing_dev: int
    backing_ino: int


@dataclass(frozen=True)
class ReleaseReply:
    """The RELEASE reply body."""

    id: int
    waited_ms: int


@dataclass(frozen=True)
class ErrorReply:
    """An ERROR body: errno, reason code and the helper's text."""

    errno: int
    reason: int
    text: str


@dataclass(frozen=True)
class Outcome:
    """One device's outcome in a RELEASE_BATCH reply (reason 0: released)."""

    id: int
    reason: int
    errno: int
    waited_ms: int
    text: str


@dataclass(frozen=True)
class AttachBatchReply:
    """The ATTACH_BATCH reply: one record per entry, in the request's order."""

    records: list[DeviceRecord]


@dataclass(frozen=True)
class ReleaseBatchReply:
    """The RELEASE_BATCH reply: one outcome per id, in the request's order."""

    outcomes: list[Outcome]


Body = (HelloReply | DeviceRecord | ReleaseReply | list[DeviceRecord] | ErrorReply |
        AttachBatchReply | ReleaseBatchReply)


@dataclass(frozen=True)
class Reply:
    """A decoded reply: its op, the echoed seq and the body."""

    op: int
    seq: int
    body: Body


def encode(op: int, seq: int, body: bytes = b"", version: int = VERSION) -> bytes:
    """A header for op and seq followed by body (no checks: tests send junk)."""
    return _HEADER.pack(MAGIC, version, op, seq, len(body)) + body


def hello(seq: int, min_version: int = VERSION, max_version: int = VERSION) -> bytes:
    """A HELLO request."""
    return encode(OP_HELLO, seq, _HELLO_REQ.pack(min_version, max_version, 0))


def attach(seq: int, flags: int, sector_size: int, offset: int, sizelimit: int) -> bytes:
    """An ATTACH request (the backing fd goes as SCM_RIGHTS beside it)."""
    return encode(OP_ATTACH, seq, _ATTACH_REQ.pack(flags, sector_size, offset, sizelimit, 0))


def release(seq: int, dev_id: int, timeout_ms: int) -> bytes:
    """A RELEASE request."""
    return encode(OP_RELEASE, seq, _RELEASE.pack(dev_id, timeout_ms))


def list_devices(seq: int) -> bytes:
    """A LIST request."""
    return encode(OP_LIST, seq)


def attach_batch(seq: int, entries: list[tuple[int, int, int, int]]) -> bytes:
    """An ATTACH_BATCH request of (flags, sector_size, offset, sizelimit)
    entries (fd i goes as SCM_RIGHTS beside it, all in one message)."""
    body = _BATCH_HEAD.pack(len(entries), 0)
    body += b"".join(_ATTACH_REQ.pack(f, ss, off, lim, 0) for f, ss, off, lim in entries)
    return encode(OP_ATTACH_BATCH, seq, body)


def release_batch(seq: int, ids: list[int], timeout_ms: int) -> bytes:
    """A RELEASE_BATCH request: one outcome per id, in order; timeout_ms for them all."""
    body = _BATCH_HEAD.pack(len(ids), timeout_ms)
    return encode(OP_RELEASE_BATCH, seq, body + b"".join(struct.pack("<I", i) for i in ids))


def fds_for_reply(reply: "Reply") -> int:
    """How many SCM_RIGHTS fds must travel with a decoded reply."""
    if isinstance(reply.body, AttachBatchReply):
        return len(reply.body.records)
    return fds_for_op(reply.op)


def fds_for_op(op: int) -> int:
    """How many SCM_RIGHTS fds travel with op (request or reply); for the
    batch ops it is the body's count, see fds_for_reply."""
    return 1 if op in (OP_ATTACH, OP_ATTACH | REPLY) else 0


def _text(raw: bytes) -> str:
    """The NUL-terminated error text; control characters shown as '?'.

    The peer may be anyone who owns the socket: escape sequences must not
    reach the user's terminal.
    """
    end = raw.find(b"\0")
    if end < 0:
        raise DecodeError("error text not NUL-terminated")
    text = raw[:end].decode("utf-8", errors="replace")
    return "".join("?" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)


def _decode_list(body: bytes) -> list[DeviceRecord]:
    if len(body) < _LIST_HEAD.size:
        raise DecodeError(f"list reply of {len(body)} bytes")
    count, reserved = _LIST_HEAD.unpack_from(body)
    if reserved != 0 or count > MAX_DEVICES:
        raise DecodeError(f"list reply count {count}, reserved {reserved}")
    if len(body) != _LIST_HEAD.size + count * _DEVICE.size:
        raise DecodeError(f"list reply of {len(body)} bytes for {count} devices")
    return [DeviceRecord(*_DEVICE.unpack_from(body, _LIST_HEAD.size + i * _DEVICE.size))
            for i in range(count)]


def _batch_count(body: bytes, item: int, what: str) -> int:
    """The count of a batch reply whose items are item bytes each."""
    if len(body) < _BATCH_HEAD.size:
        raise DecodeError(f"{what} reply of {len(body)} bytes")
    count, reserved = _BATCH_HEAD.unpack_from(body)
    if reserved != 0 or count < 1 or count > MAX_BATCH:
        raise DecodeError(f"{what} reply count {count}, reserved {reserved}")
    if len(body) != _BATCH_HEAD.size + count * item:
        raise DecodeError(f"{what} reply of {len(body)} bytes for {count} entries")
    return count


def _decode_attach_batch(body: bytes) -> AttachBatchReply:
    count = _batch_count(body, _DEVICE.size, "attach batch")
    return AttachBatchReply([
        DeviceRecord(*_DEVICE.unpack_from(body, _BATCH_HEAD.size + i * _DEVICE.size))
        for i in range(count)])


def _decode_release_batch(body: bytes) -> ReleaseBatchReply:
    count = _batch_count(body, _OUTCOME.size, "release batch")
    out = []
    for i in range(count):
        dev_id, reason, err, waited, text = _OUTCOME.unpack_from(
            body, _BATCH_HEAD.size + i * _OUTCOME.size)
        out.append(Outcome(dev_id, reason, err, waited, _text(text)))
    return ReleaseBatchReply(out)


def _decode_body(op: int, body: bytes) -> Body:
    fixed: dict[int, struct.Struct] = {
        OP_HELLO | REPLY: _HELLO_REP,
        OP_ATTACH | REPLY: _DEVICE,
        OP_RELEASE | REPLY: _RELEASE,
    }
    if op == OP_LIST | REPLY:
        return _decode_list(body)
    if op == OP_ATTACH_BATCH | REPLY:
        return _decode_attach_batch(body)
    if op == OP_RELEASE_BATCH | REPLY:
        return _decode_release_batch(body)
    if op == OP_ERROR:
        if len(body) != ERROR_SIZE:
            raise DecodeError(f"error reply of {len(body)} bytes")
        err, reason = _ERROR_HEAD.unpack_from(body)
        return ErrorReply(err, reason, _text(body[_ERROR_HEAD.size:]))
    layout = fixed.get(op)
    if layout is None:
        raise DecodeError(f"operation {op:#x} is not a reply")
    if len(body) != layout.size:
        raise DecodeError(f"reply {op:#x} of {len(body)} bytes, expected {layout.size}")
    values = layout.unpack(body)
    if op == OP_HELLO | REPLY:
        return HelloReply(*values)
    if op == OP_ATTACH | REPLY:
        return DeviceRecord(*values)
    return ReleaseReply(*values)


def decode_reply(data: bytes) -> Reply:
    """Decode one reply message; DecodeError if it is not a valid one."""
    if len(data) < HEADER_SIZE or len(data) > MAX_REPLY:
        raise DecodeError(f"message of {len(data)} bytes")
    magic, version, op, seq, body_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError(f"magic {magic:#x}")
    if body_len != len(data) - HEADER_SIZE:
        raise DecodeError(f"body_len {body_len} but {len(data) - HEADER_SIZE} bytes came")
    if version != VERSION:
        raise DecodeError(f"protocol version {version}")
    return Reply(op, seq, _decode_body(op, data[HEADER_SIZE:]))
