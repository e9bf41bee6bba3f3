"""Sessions and devices: the C API (client/loopfd.h) in Python.

    with loopfd.connect() as session:
        with session.attach("disk.img") as dev:
            os.write(dev.fd, data)
        # leaving the block closed dev.fd and released the device

A session is one connection to one helper; it is not thread-safe.
"""

from __future__ import annotations

import errno
import os
import re
import socket as _socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Union

from . import protocol as P
from . import spawn as _spawn
from . import transport
from .errors import ConnectError, Error, HelperError, ProtocolError, from_reply
from .partitions import Partition

#: What attach() accepts as the backing file: an open file, an fd, or a path.
Image = Union[int, str, "os.PathLike[str]", IO[bytes]]

DEFAULT_TIMEOUT = 10.0

_OP_NAMES = {P.OP_HELLO: "hello", P.OP_ATTACH: "attach", P.OP_RELEASE: "release",
             P.OP_LIST: "list", P.OP_ATTACH_BATCH: "attach", P.OP_RELEASE_BATCH: "release"}

#: After these release outcomes the id is gone from the session (PROTOCOL.md).
_GONE = (P.Reason.NONE, P.Reason.BUSY, P.Reason.DEVICE_CHANGED, P.Reason.DATA_LOST,
         P.Reason.KERNEL)
#: ... and after these the helper stays until the device has detached.
_LINGERS = (P.Reason.BUSY, P.Reason.DEVICE_CHANGED)

#: The helper's prefix naming the failing entry of an ATTACH_BATCH.
_ENTRY = re.compile(r"entry (\d+): (.*)", re.DOTALL)


@dataclass(frozen=True)
class Info:
    """What the helper said in the handshake (loopfd_session_info)."""

    version: int
    mode: int  # MODE_SETUID, MODE_LISTEN, MODE_SYSTEMD
    features: int  # FEAT_* the policy allows this caller
    max_devices: int  # devices this session may hold
    max_timeout_ms: int  # longest release timeout accepted
    uid: int  # the caller as the helper identified it
    gid: int


@dataclass(frozen=True)
class Receipt:
    """A successful release: every byte written is in the image, the device detached."""

    id: int
    name: str
    path: str
    image: str
    waited_ms: int  # time the helper waited for other openers


@dataclass(frozen=True)
class AttachEntry:
    """One entry of attach_batch(): an image and attach()'s options for it."""

    image: "Image"
    offset: int = 0
    sizelimit: int = 0
    read_only: bool = False
    sector_size: int = 0
    direct_io: bool = False
    partscan: bool = False
    grant: bool = False
    name: str | None = None  # the image's name in messages

    @property
    def flags(self) -> int:
        """The request's flags."""
        return ((P.READ_ONLY if self.read_only else 0) |
                (P.PARTSCAN if self.partscan else 0) |
                (P.DIRECT_IO if self.direct_io else 0) | (P.GRANT if self.grant else 0))


@dataclass(frozen=True)
class ReleaseResult:
    """One device's outcome of release_batch() (struct loopfd_release_result).

    ``error`` is None when the device was flushed and detached, else the
    exception release() would have raised for it (BusyError: it detaches by
    itself at its last close; ...).
    """

    id: int
    name: str
    path: str
    image: str
    waited_ms: int  # time this device waited for other openers
    error: "Error | None" = None

    @property
    def ok(self) -> bool:
        """Whether every byte is in the image and the device detached."""
        return self.error is None

    def receipt(self) -> Receipt:
        """The Receipt of a success; raises the device's error otherwise."""
        if self.error is not None:
            raise self.error
        return Receipt(self.id, self.name, self.path, self.image, self.waited_ms)


@dataclass(eq=False)
class Device:
    """An attached device (struct loopfd_device); a context manager that releases.

    ``fd`` is an open, close-on-exec fd of the device that belongs to the
    caller (-1 in list() entries and after release).  ``image`` names the
    backing file in messages.
    """

    fd: int
    id: int
    index: int
    name: str
    path: str
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
    image: str = ""
    session: "Session | None" = field(default=None, repr=False)

    @classmethod
    def from_record(cls, rec: P.DeviceRecord, fd: int, image: str,
                    session: "Session | None") -> "Device":
        """A Device from the wire's record."""
        return cls(fd=fd, id=rec.id, index=rec.index, name=f"loop{rec.index}",
                   path=f"/dev/loop{rec.index}", major=rec.major, minor=rec.minor,
                   diskseq=rec.diskseq, size=rec.size, flags=rec.flags,
                   sector_size=rec.sector_size, offset=rec.offset,
                   sizelimit=rec.sizelimit, backing_dev=rec.backing_dev,
                   backing_ino=rec.backing_ino, image=image, session=session)

    @property
    def read_only(self) -> bool:
        """Whether the device is read-only (asked for, or a read-only backing fd)."""
        return bool(self.flags & P.READ_ONLY)

    def close_fd(self) -> None:
        """Close our device fd (release() does it first anyway)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def release(self, timeout: float = DEFAULT_TIMEOUT) -> Receipt:
        """Close our fd, then have the helper flush, clear and confirm the detach.

        timeout: seconds to wait for other openers.  Raises BusyError,
        DataLostError, ... naming the device, the image and the reason.
        """
        if self.session is None:
            raise Error(f"release of {self.path}: the device belongs to no session",
                        errno=errno.EINVAL)
        return self.session.release(self, timeout)

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        """Release; a failure raises, or, while another exception is on its
        way out, is added to that one as a note rather than replacing it."""
        if self.session is None or self.id not in self.session.held:
            self.close_fd()
            return
        try:
            self.release(self.session.release_timeout)
        except Error as failure:
            if exc is None:
                raise
            exc.add_note(str(failure))


def _image_name(image: Image) -> str:
    if isinstance(image, int):
        return f"fd {image}"
    if isinstance(image, (str, os.PathLike)):
        return os.fsdecode(image)
    name = getattr(image, "name", None)
    return str(name) if name is not None else f"fd {image.fileno()}"


def _name_entry(e: HelperError, names: list[str]) -> None:
    """An ATTACH_BATCH error: its entry (the helper's "entry K: ") named by
    its image, as a single attach of it would be; others are left alone."""
    m = _ENTRY.fullmatch(e.text)
    if m is None or int(m.group(1)) >= len(names):
        return
    e.entry = int(m.group(1))
    e.text = m.group(2)
    e.message = f"{names[e.entry]}: attach: helper refused: entry {e.entry}: {e.text}"


def _open_image(path: str, read_only: bool) -> int:
    """Open path as the caller; O_NONBLOCK only so that a FIFO cannot hang open()."""
    flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags | os.O_NONBLOCK)
    except OSError as e:
        hint = " (read_only=True attaches it read-only)" \
            if not read_only and e.errno in (errno.EACCES, errno.EROFS) else ""
        how = "reading" if read_only else "reading and writing"
        raise Error(f"{path}: cannot open for {how}: {e.strerror}{hint}",
                    errno=e.errno) from e
    os.set_blocking(fd, True)
    return fd


class Session:
    """One connection to a helper (struct loopfd_session).  Use connect()."""

    def __init__(self, sock: _socket.socket, helper_pid: int | None = None,
                 helper_path: str = "") -> None:
        self._sock: _socket.socket | None = sock
        self._helper_pid = helper_pid
        self._helper_path = helper_path
        self._seq = 0
        self._broken = False
        self._lingers = False  # a device released busy or changed
        self.held: dict[int, Device] = {}  # attached, not yet released
        #: seconds a release waits for other openers when a device's or the
        #: session's with-block ends
        self.release_timeout = DEFAULT_TIMEOUT
        self.info = Info(0, 0, 0, 0, 0, 0, 0)

    # ---- one request, one reply ------------------------------------------

    def _fail(self, op: int, what: str) -> ProtocolError:
        self._broken = True
        return ProtocolError(f"{_OP_NAMES.get(op, 'request')}: bad reply from helper: "
                             f"{what}", operation=_OP_NAMES.get(op, "request"))

    def _note_release(self, dev_id: int, reason: int) -> None:
        """The session's bookkeeping after a release outcome (as libloopfd's)."""
        if reason in _LINGERS:
            self._lingers = True
        if reason in _GONE:
            self.held.pop(dev_id, None)

    def _check(self, op: int, got: transport.Received) -> P.Reply:
        """The reply to op, or the exception it stands for."""
        if got.truncated or got.other_control:
            raise self._fail(op, "truncated or unexpected control data")
        try:
            reply = P.decode_reply(got.data)
        except P.DecodeError as e:
            raise self._fail(op, f"malformed message ({e})") from None
        if reply.seq != self._seq:
            raise self._fail(op, f"answer to request {reply.seq}, expected {self._seq}")
        if isinstance(reply.body, P.ErrorReply):
            b = reply.body
            raise from_reply(_OP_NAMES.get(op, "request"), b.errno, b.reason, b.text)
        if reply.op != op | P.REPLY:
            raise self._fail(op, f"operation {reply.op:#x} in reply to {op:#x}")
        if len(got.fds) != P.fds_for_reply(reply):
            raise self._fail(op, f"{len(got.fds)} file descriptors, expected "
                                 f"{P.fds_for_reply(reply)}")
        return reply

    def transact(self, op: int, body: bytes, fd: int | None = None) -> tuple[P.Reply, int]:
        """Send a request (header made here) and return the reply and its fd (-1)."""
        reply, fds = self.transact_fds(op, body, [] if fd is None else [fd])
        return reply, fds[0] if fds else -1

    def transact_fds(self, op: int, body: bytes,
                     fds: Sequence[int] = ()) -> tuple[P.Reply, list[int]]:
        """Send a request with fds (one SCM_RIGHTS message); the reply and its fds."""
        name = _OP_NAMES.get(op, "request")
        if self._sock is None or self._broken:
            raise Error(f"{name}: the connection to the helper is unusable after an "
                        "earlier error or close", errno=errno.ENOTCONN, operation=name)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        try:
            transport.send(self._sock, P.encode(op, self._seq, body), fds or None)
            got = transport.recv(self._sock)
        except (BrokenPipeError, ConnectionResetError) as e:
            self._broken = True
            raise Error(f"{name}: the helper closed the connection", errno=e.errno,
                        operation=name) from e
        except OSError as e:
            self._broken = True
            raise Error(f"{name}: talking to the helper: {e.strerror}", errno=e.errno,
                        operation=name) from e
        if not got.data and not got.fds:
            self._broken = True
            raise Error(f"{name}: the helper closed the connection without answering",
                        errno=errno.ECONNRESET, operation=name)
        try:
            reply = self._check(op, got)
        except BaseException:
            got.close_fds()
            raise
        return reply, got.fds

    # ---- the operations --------------------------------------------------

    def hello(self) -> Info:
        """The handshake; connect() does it."""
        body = P.hello(0)[P.HEADER_SIZE:]
        reply, _ = self.transact(P.OP_HELLO, body)
        h = reply.body
        assert isinstance(h, P.HelloReply)
        if h.version != P.VERSION:
            self._broken = True
            raise ConnectError(f"hello: helper chose protocol version {h.version}, this "
                               f"client speaks {P.VERSION}", errno=errno.EPROTONOSUPPORT)
        self.info = Info(h.version, h.mode, h.features, h.max_devices, h.max_timeout_ms,
                         h.uid, h.gid)
        return self.info

    def attach(self, image: Image, *, offset: int = 0, sizelimit: int = 0,
               read_only: bool = False, sector_size: int = 0, direct_io: bool = False,
               partscan: bool = False, grant: bool = False,
               name: str | None = None) -> Device:
        """Attach a loop device to image (loopfd_attach).

        image: an open file (its open mode is the access granted: a read-only
        file gives a read-only device), an fd, or a path opened here as the
        caller (read-only with read_only=True).  The caller may close its
        file right after: the device holds its own reference.
        offset, sizelimit: the window in bytes (0: to the end), multiples of
        the sector size.  sector_size: 0 for the kernel's default (512).
        grant: /dev/loopN is owned by the caller until the release.
        name: the image's name in messages (default: the path or file name).
        """
        flags = ((P.READ_ONLY if read_only else 0) | (P.PARTSCAN if partscan else 0) |
                 (P.DIRECT_IO if direct_io else 0) | (P.GRANT if grant else 0))
        name = name or _image_name(image)
        opened = -1
        if isinstance(image, (str, os.PathLike)):
            opened = backing = _open_image(os.fsdecode(image), read_only)
        else:
            backing = image if isinstance(image, int) else image.fileno()
        try:
            body = P.attach(0, flags, sector_size, offset, sizelimit)[P.HEADER_SIZE:]
            try:
                reply, fd = self.transact(P.OP_ATTACH, body, backing)
            except Error as e:
                e.message = f"{name}: {e.message}"
                raise
        finally:
            if opened >= 0:
                os.close(opened)
        rec = reply.body
        assert isinstance(rec, P.DeviceRecord)
        dev = Device.from_record(rec, fd, name, self)
        self.held[dev.id] = dev  # the helper holds it, whatever follows
        self._check_device_fd(dev)
        return dev

    def attach_partition(self, image: Image, partition: Partition, *,
                         read_only: bool = False, direct_io: bool = False,
                         grant: bool = False, name: str | None = None) -> Device:
        """Attach one partition of image (loopfd_attach_partition): a window of
        the partition's bytes with the table's sector size."""
        if partition.extended:
            raise Error(f"attach partition {partition.number}: an MBR extended "
                        "partition holds only the logical ones (5 and up); attach those",
                        errno=errno.EINVAL)
        label = name or f"{_image_name(image)} partition {partition.number}"
        return self.attach(image, offset=partition.start_bytes,
                           sizelimit=partition.size_bytes, read_only=read_only,
                           sector_size=partition.sector_size, direct_io=direct_io,
                           grant=grant, name=label)

    def _check_device_fd(self, dev: Device) -> None:
        """The fd must be the device the reply names, or we write elsewhere."""
        st = os.fstat(dev.fd)
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != os.makedev(dev.major, dev.minor):
            dev.close_fd()
            raise self._fail(P.OP_ATTACH, "the fd received is not the block device the "
                                          "reply names")

    def release(self, device: Device | int, timeout: float = DEFAULT_TIMEOUT) -> Receipt:
        """Release a device (or an id): flush, clear, confirm (loopfd_release).

        Our own fd of the device is closed first: while any fd is open the
        device is busy.  On failure the exception's message names the device,
        the image and the reason; BusyError means it detaches by itself at
        its last close.
        """
        dev = device if isinstance(device, Device) else self.held.get(device)
        dev_id = device.id if isinstance(device, Device) else device
        if dev is not None:
            dev.close_fd()
        timeout_ms = round(timeout * 1000)
        if timeout_ms < 0 or timeout_ms > 0xFFFFFFFF:
            raise Error(f"release: timeout {timeout} s out of range", errno=errno.EINVAL)
        body = P.release(0, dev_id, timeout_ms)[P.HEADER_SIZE:]
        what = f"{dev.path} (image {dev.image})" if dev else f"device id {dev_id}"
        try:
            reply, _ = self.transact(P.OP_RELEASE, body)
        except Error as e:
            if isinstance(e, HelperError):
                self._note_release(dev_id, e.reason)
            e.message = f"release of {what} failed: {e.text}"
            raise
        self._note_release(dev_id, P.Reason.NONE)
        rep = reply.body
        assert isinstance(rep, P.ReleaseReply)
        if rep.id != dev_id:
            raise self._fail(P.OP_RELEASE, "the reply names another device")
        return Receipt(dev_id, dev.name if dev else "", dev.path if dev else "",
                       dev.image if dev else "", rep.waited_ms)

    # ---- batches ---------------------------------------------------------

    @property
    def batched(self) -> bool:
        """Whether the helper takes batches in one request (FEAT_BATCH)."""
        return bool(self.info.features & P.FEAT_BATCH)

    def attach_batch(self, entries: Sequence["AttachEntry | Image"]) -> list[Device]:
        """Attach 1 to 64 images, all or nothing (loopfd_attach_batch).

        entries: AttachEntry objects (an image and attach()'s options for
        it), or plain images (attach()'s defaults).  Returns the devices in
        the entries' order.  One request and one reply when the helper has
        FEAT_BATCH; one attach() per entry otherwise, undone on a failure.

        On failure nothing is attached (the helper released those of the
        batch it had attached before the failing entry) and the exception
        is the one attach() would raise for that entry, its ``entry`` the
        entry's index, its message beginning with the entry's image and
        saying ``entry K: ``; ``entry`` is None when the failure was not
        one entry's (the count, the connection, a reply that does not fit).
        """
        items = [e if isinstance(e, AttachEntry) else AttachEntry(e) for e in entries]
        if not 1 <= len(items) <= P.MAX_BATCH:
            raise Error(f"attach: a batch takes 1 to {P.MAX_BATCH} entries "
                        f"({len(items)} given)", errno=errno.EINVAL, operation="attach")
        if not self.batched:
            return self._attach_each(items)
        names = [e.name or _image_name(e.image) for e in items]
        opened: list[int] = []
        try:
            backing = [self._backing_fd(e, i, opened) for i, e in enumerate(items)]
            body = P.attach_batch(0, [(e.flags, e.sector_size, e.offset, e.sizelimit)
                                      for e in items])[P.HEADER_SIZE:]
            try:
                reply, fds = self.transact_fds(P.OP_ATTACH_BATCH, body, backing)
            except HelperError as e:
                _name_entry(e, names)
                raise
        finally:
            for fd in opened:
                os.close(fd)
        assert isinstance(reply.body, P.AttachBatchReply)
        devs = [Device.from_record(rec, fd, name, self)
                for rec, fd, name in zip(reply.body.records, fds, names)]
        for dev in devs:
            self.held[dev.id] = dev  # the helper holds them, whatever follows
        if len(devs) != len(items):
            for dev in devs:
                dev.close_fd()
            raise self._fail(P.OP_ATTACH_BATCH, f"{len(devs)} devices for "
                                                f"{len(items)} entries")
        try:
            for dev in devs:
                self._check_device_fd(dev)
        except Error:
            for dev in devs:
                dev.close_fd()
            raise
        return devs

    @staticmethod
    def _backing_fd(entry: "AttachEntry", index: int, opened: list[int]) -> int:
        """The entry's backing fd; a path is opened here (into opened)."""
        if isinstance(entry.image, (str, os.PathLike)):
            try:
                fd = _open_image(os.fsdecode(entry.image), entry.read_only)
            except Error as e:
                e.entry = index
                raise
            opened.append(fd)
            return fd
        return entry.image if isinstance(entry.image, int) else entry.image.fileno()

    def _attach_each(self, items: list["AttachEntry"]) -> list[Device]:
        """A helper without FEAT_BATCH: attach() after attach(), and on a
        failure the earlier ones released (timeout 0), as the helper would."""
        devs: list[Device] = []
        for i, e in enumerate(items):
            try:
                devs.append(self.attach(e.image, offset=e.offset, sizelimit=e.sizelimit,
                                        read_only=e.read_only, sector_size=e.sector_size,
                                        direct_io=e.direct_io, partscan=e.partscan,
                                        grant=e.grant, name=e.name))
            except Error as failure:
                failure.entry = i
                if isinstance(failure, HelperError):
                    name = e.name or _image_name(e.image)
                    failure.message = (f"{name}: attach: helper refused: entry {i}: "
                                       f"{failure.text}")
                for dev in devs:
                    try:
                        self.release(dev, 0)
                    except Error as undo:
                        failure.add_note(f"undoing entry {devs.index(dev)}: {undo}")
                raise
        return devs

    def release_batch(self, devices: Sequence[Device | int],
                      timeout: float = DEFAULT_TIMEOUT) -> list[ReleaseResult]:
        """Release 1 to 64 devices (or ids), one result each, in order
        (loopfd_release_batch).

        Our own fds of the devices are closed first.  timeout: seconds that
        the whole batch may wait for other openers (each device, for a
        helper without FEAT_BATCH, which gets one release() per device).
        One device's failure does not stop the others, and does not raise:
        its ReleaseResult's ``error`` is the exception release() would have
        raised (result.receipt() raises it).  Raises only when the request
        as a whole was refused, and then nothing was released: ids given
        twice (Error, EINVAL), a timeout the helper refuses
        (BadOptionError), the connection failing, a reply that does not
        answer the request (ProtocolError).
        """
        ids = [d.id if isinstance(d, Device) else d for d in devices]
        if not 1 <= len(ids) <= P.MAX_BATCH:
            raise Error(f"release: a batch takes 1 to {P.MAX_BATCH} devices "
                        f"({len(ids)} given)", errno=errno.EINVAL, operation="release")
        for i, dev_id in enumerate(ids):
            if dev_id in ids[:i]:
                raise Error(f"release: device id {dev_id} given twice (entries "
                            f"{ids.index(dev_id)} and {i})", errno=errno.EINVAL,
                            operation="release")
        timeout_ms = round(timeout * 1000)
        if timeout_ms < 0 or timeout_ms > 0xFFFFFFFF:
            raise Error(f"release: timeout {timeout} s out of range", errno=errno.EINVAL)
        known = [d if isinstance(d, Device) else self.held.get(d) for d in devices]
        if not self.batched:
            return [self._release_one(dev_id, dev, timeout) for dev_id, dev in zip(ids, known)]
        for dev in known:
            if dev is not None:
                dev.close_fd()
        body = P.release_batch(0, ids, timeout_ms)[P.HEADER_SIZE:]
        reply, _ = self.transact_fds(P.OP_RELEASE_BATCH, body)
        assert isinstance(reply.body, P.ReleaseBatchReply)
        outcomes = reply.body.outcomes
        if [o.id for o in outcomes] != ids:
            raise self._fail(P.OP_RELEASE_BATCH, "the outcomes name other devices")
        return [self._result(o, dev) for o, dev in zip(outcomes, known)]

    def _release_one(self, dev_id: int, dev: Device | None, timeout: float) -> ReleaseResult:
        """release() as a ReleaseResult (a helper without FEAT_BATCH)."""
        try:
            r = self.release(dev if dev is not None else dev_id, timeout)
        except HelperError as e:
            return ReleaseResult(dev_id, dev.name if dev else "", dev.path if dev else "",
                                 dev.image if dev else "", 0, e)
        return ReleaseResult(r.id, r.name, r.path, r.image, r.waited_ms)

    def _result(self, o: P.Outcome, dev: Device | None) -> ReleaseResult:
        """One outcome of a RELEASE_BATCH reply, worded as release() would."""
        self._note_release(o.id, o.reason)
        error = None
        if o.reason != P.Reason.NONE:
            error = from_reply("release", o.errno, o.reason, o.text)
            what = f"{dev.path} (image {dev.image})" if dev else f"device id {o.id}"
            error.message = f"release of {what} failed: {error.text}"
        return ReleaseResult(o.id, dev.name if dev else "", dev.path if dev else "",
                             dev.image if dev else "", o.waited_ms, error)

    def list(self) -> list[Device]:
        """The devices this session holds, sorted by id, with fd -1 (loopfd_list).

        (The helper lists them in no particular order.)
        """
        reply, _ = self.transact(P.OP_LIST, b"")
        assert isinstance(reply.body, list)
        out = []
        for rec in sorted(reply.body, key=lambda r: r.id):
            known = self.held.get(rec.id)
            out.append(Device.from_record(rec, -1, known.image if known else "", self))
        return out

    # ---- the end ---------------------------------------------------------

    def release_all(self, timeout: float = DEFAULT_TIMEOUT) -> list[Receipt]:
        """Release every device still held, in batches of up to 64 (each
        batch waits at most timeout for other openers); raise the first
        failure after trying all."""
        held = list(self.held.values())
        receipts: list[Receipt] = []
        first: Error | None = None
        for start in range(0, len(held), P.MAX_BATCH):
            try:
                results = self.release_batch(held[start:start + P.MAX_BATCH], timeout)
            except Error as e:
                first = first or e
                if self._broken:
                    break
                continue
            for r in results:
                if r.error is not None:
                    first = first or r.error
                else:
                    receipts.append(r.receipt())
        if first is not None:
            raise first
        return receipts

    def close(self) -> None:
        """Close the connection (loopfd_close).

        The helper releases whatever the session still holds, on its own,
        and logs the outcome (our fds of those devices are closed first, or
        it would find them busy).  The with-block form releases them here
        instead, so that a failure raises.  A spawned helper is waited for only when it
        has nothing left to do: with a device still held (perhaps its fd
        still open here) or released busy, waiting could hang for ever.
        """
        for dev in self.held.values():
            dev.close_fd()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._helper_pid is not None:
            pid, self._helper_pid = self._helper_pid, None
            try:
                if not self._lingers and not self.held:
                    os.waitpid(pid, 0)
                else:
                    os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def _explain_death(self, e: Error) -> Error:
        """Close after a failed HELLO; for a spawned helper that hung up, an
        exception that says how it ended (its own message is on stderr)."""
        pid, path = self._helper_pid, self._helper_path
        self._helper_pid = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if pid is None:
            return e
        _, status = os.waitpid(pid, 0)  # it holds no device yet: it exits now
        if e.reason == 0 and e.errno in (errno.ECONNRESET, errno.EPIPE):
            return ConnectError(_spawn.describe_exit(path, status), errno=e.errno)
        return e

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        """Release what is still held (raising a failure, or adding it as a
        note to an exception already on its way out), then close."""
        try:
            if not self._broken and self._sock is not None:
                self.release_all(self.release_timeout)
        except Error as failure:
            if exc is None:
                raise
            exc.add_note(str(failure))
        finally:
            self.close()


def _connect_socket(path: str) -> _socket.socket:
    if not path:
        raise ConnectError("connect: empty socket path", errno=errno.EINVAL)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
            msg = (f"connect to helper socket {path}: {e.strerror} (is `loopfd-helper "
                   f"--listen {path}` running?)")
        elif e.errno == errno.EPROTOTYPE:
            msg = (f"connect to helper socket {path}: not a SOCK_SEQPACKET socket, so "
                   "not a loopfd helper")
        else:
            msg = f"connect to helper socket {path}: {e.strerror}"
        raise ConnectError(msg, errno=e.errno) from e
    return sock


def connect(socket: str | None = None) -> Session:
    """Connect to a helper and do the handshake (loopfd_connect).

    socket: a `loopfd-helper --listen PATH` daemon's (or a systemd socket
    unit's) path.  None: $LOOPFD_SOCKET if set and not empty, else start the
    setuid helper (the installed path; $LOOPFD_HELPER instead, but only for a
    caller that is neither root nor setuid/setgid).
    """
    path = socket if socket is not None else os.environ.get("LOOPFD_SOCKET") or None
    if path is not None:
        session = Session(_connect_socket(path))
    else:
        helper = _spawn.helper_path()
        sock, pid = _spawn.spawn(helper)
        session = Session(sock, pid, helper)
    try:
        session.hello()
    except Error as e:
        explained = session._explain_death(e)
        if explained is e:
            raise
        raise explained from e
    except BaseException:
        session.close()
        raise
    return session

