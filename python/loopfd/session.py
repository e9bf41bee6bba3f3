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
import socket as _socket
import stat
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Union

from . import protocol as P
from . import spawn as _spawn
from . import transport
from .errors import (BusyError, ConnectError, DataLostError, DeviceChangedError, Error,
                     ProtocolError, from_reply)
from .partitions import Partition

#: What attach() accepts as the backing file: an open file, an fd, or a path.
Image = Union[int, str, "os.PathLike[str]", IO[bytes]]

DEFAULT_TIMEOUT = 10.0

_OP_NAMES = {P.OP_HELLO: "hello", P.OP_ATTACH: "attach", P.OP_RELEASE: "release",
             P.OP_LIST: "list"}


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
        if len(got.fds) != P.fds_for_op(reply.op):
            raise self._fail(op, f"{len(got.fds)} file descriptors, expected "
                                 f"{P.fds_for_op(reply.op)}")
        return reply

    def transact(self, op: int, body: bytes, fd: int | None = None) -> tuple[P.Reply, int]:
        """Send a request (header made here) and return the reply and its fd (-1)."""
        name = _OP_NAMES.get(op, "request")
        if self._sock is None or self._broken:
            raise Error(f"{name}: the connection to the helper is unusable after an "
                        "earlier error or close", errno=errno.ENOTCONN, operation=name)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        try:
            transport.send(self._sock, P.encode(op, self._seq, body), fd)
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
        return reply, got.fds[0] if got.fds else -1

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
            if isinstance(e, (BusyError, DeviceChangedError)):
                self._lingers = True
            if isinstance(e, (BusyError, DeviceChangedError, DataLostError)):
                self.held.pop(dev_id, None)  # the id is gone from the session
            e.message = f"release of {what} failed: {e.text}"
            raise
        self.held.pop(dev_id, None)
        rep = reply.body
        assert isinstance(rep, P.ReleaseReply)
        if rep.id != dev_id:
            raise self._fail(P.OP_RELEASE, "the reply names another device")
        return Receipt(dev_id, dev.name if dev else "", dev.path if dev else "",
                       dev.image if dev else "", rep.waited_ms)

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
        """Release every device still held; raise the first failure after trying all."""
        receipts, first = [], None
        for dev in list(self.held.values()):
            try:
                receipts.append(self.release(dev, timeout))
            except Error as e:
                first = first or e
                if self._broken:
                    break
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

