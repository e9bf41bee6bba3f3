"""Exceptions: one base class, one subclass per reason code the helper sends.

Every exception carries ``errno`` (a Linux errno value), ``reason`` (the
helper's reason code, 0 for a failure on this side) and ``message`` (the
helper's own text, or ours).  ``str(e)`` reads like the C client's
``loopfd_strerror``: ``"<operation>: helper refused: <the helper's text>"``.
"""

from __future__ import annotations

import errno as _errno

from .protocol import Reason


class Error(Exception):
    """Base class of every loopfd failure."""

    reason: int = Reason.NONE
    default_errno: int = _errno.EIO
    #: for a failed attach_batch: the index of the entry that failed (from
    #: 0); None when the failure was not one entry's (nothing was attached
    #: either way)
    entry: int | None = None

    def __init__(self, message: str, *, errno: int | None = None,
                 reason: int | None = None, operation: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno if errno is not None else self.default_errno
        if reason is not None:
            self.reason = reason
        self.operation = operation
        self.text = message  # the helper's own words, for an ERROR reply

    def __str__(self) -> str:
        return self.message


class ProtocolError(Error):
    """A reply that does not belong to its request: the session is unusable."""

    default_errno = _errno.EPROTO


class ConnectError(Error):
    """The helper could not be started or reached (see the message)."""


class HelperError(Error):
    """The helper answered ERROR; ``reason`` says why."""


class LimitError(HelperError):
    """A device limit (session, per-user or system-wide) is reached."""


class MalformedError(HelperError):
    """The helper found a message malformed (size, magic, body_len, reserved field)."""

    reason = Reason.MALFORMED
    default_errno = _errno.EPROTO


class VersionError(HelperError):
    """No common protocol version."""

    reason = Reason.VERSION
    default_errno = _errno.EPROTONOSUPPORT


class UnknownOpError(HelperError):
    """The op is not a request op."""

    reason = Reason.UNKNOWN_OP
    default_errno = _errno.EOPNOTSUPP


class NoHelloError(HelperError):
    """A request came before HELLO."""

    reason = Reason.NO_HELLO
    default_errno = _errno.EPROTO


class FdCountError(HelperError):
    """File descriptors missing, extra or cut off."""

    reason = Reason.FD_COUNT
    default_errno = _errno.EBADF


class ControlError(HelperError):
    """A control message other than one SCM_RIGHTS."""

    reason = Reason.CONTROL
    default_errno = _errno.EPROTO


class NotAuthorizedError(HelperError):
    """The policy does not list the caller."""

    reason = Reason.NOT_AUTHORIZED
    default_errno = _errno.EPERM


class ConfigError(HelperError):
    """The helper's configuration or state directory is unusable."""

    reason = Reason.CONFIG
    default_errno = _errno.EACCES


class ForbiddenOptionError(HelperError):
    """The policy forbids grant, partscan or direct I/O."""

    reason = Reason.FORBIDDEN_OPTION
    default_errno = _errno.EPERM


class BadOptionError(HelperError):
    """Unknown flag, sector size, offset/sizelimit or timeout."""

    reason = Reason.BAD_OPTION
    default_errno = _errno.EINVAL


class BackingKindError(HelperError):
    """The backing fd is not a regular file (or allowed block device)."""

    reason = Reason.BACKING_KIND
    default_errno = _errno.EINVAL


class BackingAccessError(HelperError):
    """The backing fd is O_PATH, write-only or O_APPEND."""

    reason = Reason.BACKING_ACCESS
    default_errno = _errno.EBADF


class BackingFsError(HelperError):
    """The backing file is on a kernel pseudo filesystem, or on a filesystem the policy does not allow."""

    reason = Reason.BACKING_FS
    default_errno = _errno.EINVAL


class BackingLoopError(HelperError):
    """The backing fd is a loop device or /dev/loop-control."""

    reason = Reason.BACKING_LOOP
    default_errno = _errno.EINVAL


class QuotaUserError(LimitError):
    """The per-user device limit, across all sessions and modes."""

    reason = Reason.QUOTA_USER
    default_errno = _errno.EDQUOT


class QuotaGlobalError(LimitError):
    """The system-wide device limit."""

    reason = Reason.QUOTA_GLOBAL
    default_errno = _errno.EAGAIN


class QuotaSessionError(LimitError):
    """The per-session protocol cap of 64 devices."""

    reason = Reason.QUOTA_SESSION
    default_errno = _errno.EMFILE


class NoDeviceError(HelperError):
    """No free loop device, or the node is unusable."""

    reason = Reason.NO_DEVICE
    default_errno = _errno.EBUSY


class KernelError(HelperError):
    """An ioctl or open failed unexpectedly."""

    reason = Reason.KERNEL
    default_errno = _errno.EIO


class UnknownDeviceError(HelperError):
    """RELEASE of an id this session does not hold."""

    reason = Reason.UNKNOWN_DEVICE
    default_errno = _errno.ENOENT


class DeviceChangedError(HelperError):
    """The device was cleared, re-bound or re-pointed behind the helper."""

    reason = Reason.DEVICE_CHANGED
    default_errno = _errno.ESTALE


class DataLostError(HelperError):
    """Writeback failed: data written through the device is not all in the file."""

    reason = Reason.DATA_LOST
    default_errno = _errno.EIO


class BusyError(HelperError):
    """Still open elsewhere after the timeout; detaches at the last close."""

    reason = Reason.BUSY
    default_errno = _errno.EBUSY


_ALL: tuple[type[HelperError], ...] = (
    MalformedError, VersionError, UnknownOpError, NoHelloError, FdCountError,
    ControlError, NotAuthorizedError, ConfigError, ForbiddenOptionError, BadOptionError,
    BackingKindError, BackingAccessError, BackingFsError, BackingLoopError,
    QuotaUserError, QuotaGlobalError, QuotaSessionError, NoDeviceError, KernelError,
    UnknownDeviceError, DeviceChangedError, DataLostError, BusyError)
BY_REASON: dict[int, type[HelperError]] = {cls.reason: cls for cls in _ALL}


def from_reply(operation: str, err: int, reason: int, text: str) -> HelperError:
    """The exception for an ERROR reply to operation (as the C client words it)."""
    cls = BY_REASON.get(reason, HelperError)
    # An errno value the helper made up would mislead os.strerror().
    if err <= 0 or err >= 4096:
        err = cls.default_errno if cls is not HelperError else _errno.EPROTO
    if not text:
        text = Reason(reason).name.lower() if reason in BY_REASON else f"reason {reason}"
    exc = cls(f"{operation}: helper refused: {text}", errno=err, reason=reason,
              operation=operation)
    exc.text = text
    return exc
