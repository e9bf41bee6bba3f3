"""One message per sendmsg/recvmsg on a SOCK_SEQPACKET socket, fds as SCM_RIGHTS."""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from .protocol import MAX_BATCH, MAX_REPLY

# Room for more fds than the protocol ever sends (an ATTACH_BATCH reply's
# 64), so that extra ones are seen (and closed) rather than cut off silently.
_MAX_FDS = MAX_BATCH + 8


@dataclass
class Received:
    """One message: its bytes, the fds that came with it, what went wrong."""

    data: bytes
    fds: list[int] = field(default_factory=list)
    truncated: bool = False  # MSG_TRUNC or MSG_CTRUNC
    other_control: bool = False  # a control message other than SCM_RIGHTS

    def close_fds(self) -> None:
        """Close every fd that came with the message."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def send(sock: socket.socket, data: bytes, fd: int | Sequence[int] | None = None) -> None:
    """Send one message, with fd (or every fd of a sequence, in order, in
    one SCM_RIGHTS control message) when given.

    MSG_NOSIGNAL: a helper that went away is BrokenPipeError, not SIGPIPE.
    """
    fds = [] if fd is None else [fd] if isinstance(fd, int) else list(fd)
    ancillary = []
    if fds:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds)))
    while True:
        try:
            sock.sendmsg([data], ancillary, socket.MSG_NOSIGNAL)
            return
        except InterruptedError:
            continue


def recv(sock: socket.socket) -> Received:
    """Receive one message; every fd arrives close-on-exec (MSG_CMSG_CLOEXEC).

    The buffer takes the largest reply (a RELEASE_BATCH of 64 outcomes is
    16408 bytes, more than the 8192 of any other message).
    """
    data, ancdata, flags, _ = sock.recvmsg(
        MAX_REPLY, socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize),
        socket.MSG_CMSG_CLOEXEC)
    got = Received(data)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            got.fds.extend(fds)
        else:
            got.other_control = True
    got.truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))
    return got
