"""Starting the setuid helper on one end of a socketpair (PROTOCOL.md, Transport).

The contract, as libloopfd keeps it: the helper is exec'd as
``loopfd-helper --fd 3`` with an empty environment, its end of a
SOCK_SEQPACKET socketpair on fd 3, and the caller's stdin, stdout and stderr
(stderr is the helper's log).  Nothing else is passed: every other fd of
ours is close-on-exec (Python's default).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat

from . import _paths
from .errors import ConnectError

HELPER_FD = 3
_PR_GET_NO_NEW_PRIVS = 39


def helper_path() -> str:
    """The helper to start: $LOOPFD_HELPER only for a caller that gains nothing.

    Not for root, and not when the effective ids differ from the real ones
    (a setuid or setgid program, whose environment belongs to a less
    privileged user): the C client's secure_getenv rule.
    """
    if os.getuid() == 0 or os.geteuid() != os.getuid() or os.getegid() != os.getgid():
        return _paths.HELPER_PATH
    chosen = os.environ.get("LOOPFD_HELPER", "")
    return chosen or _paths.HELPER_PATH


def no_new_privs() -> bool:
    """Whether no_new_privs is set on this process (/proc/self/status, else prctl)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("NoNewPrivs:"):
                    return line.split()[1] == "1"
    except OSError:
        pass
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1)


def user_namespace() -> str | None:
    """This process's uid_map when it is not the initial user namespace's.

    Only the initial namespace maps all 2^32 ids from 0; in any other the
    kernel ignores the setuid bit of a file whose owner is not mapped, and
    even where root is mapped the helper's ids are not the machine's.
    """
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            fields = f.read().split()[:3]
    except OSError:
        return None  # no /proc: the other checks still apply
    if len(fields) != 3 or fields == ["0", "0", "4294967295"]:
        return None
    return " ".join(fields)


def check_can_spawn(path: str) -> None:
    """Say plainly why a setuid helper would run without privilege."""
    if os.geteuid() != 0 and no_new_privs():
        raise ConnectError(
            "connect: no_new_privs is set for this process (e.g. inside bubblewrap), "
            "so a setuid helper cannot gain privilege here; use socket mode: set "
            "LOOPFD_SOCKET or socket= to the socket of a `loopfd-helper --listen PATH` "
            "daemon", errno=errno.EPERM)
    uid_map = user_namespace()
    if uid_map is not None:
        raise ConnectError(
            f"connect: this process runs in a user namespace (uid_map {uid_map}), where "
            "a setuid helper cannot gain privilege; use socket mode: set LOOPFD_SOCKET "
            "or socket= to the socket of a `loopfd-helper --listen PATH` daemon (or of "
            "the loopfd.socket unit) bound into the namespace", errno=errno.EPERM)
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConnectError(f"connect: helper {path}: {e.strerror}", errno=e.errno) from e
    if os.geteuid() == 0:
        return
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or not st.st_mode & stat.S_ISUID:
        raise ConnectError(
            f"connect: helper {path} is not installed setuid root (owner uid "
            f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): run make install as "
            "root, or use socket mode (LOOPFD_SOCKET or socket=)", errno=errno.EPERM)
    if os.statvfs(path).f_flag & os.ST_NOSUID:
        raise ConnectError(
            f"connect: helper {path} is on a filesystem mounted nosuid, so it cannot "
            "gain privilege; use socket mode (LOOPFD_SOCKET or socket=)",
            errno=errno.EPERM)


def spawn(path: str) -> tuple[socket.socket, int]:
    """Start the helper; return our end of the socketpair and its pid."""
    check_can_spawn(path)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        # posix_spawn's dup2 onto the same number would leave close-on-exec
        # set on some C libraries: keep the helper's end off fd 3.
        if theirs.fileno() == HELPER_FD:
            moved = socket.socket(fileno=os.dup(theirs.fileno()))
            theirs.close()
            theirs = moved
        try:
            pid = os.posix_spawn(
                path, ["loopfd-helper", "--fd", str(HELPER_FD)], {},
                file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), HELPER_FD)])
        except OSError as e:
            raise ConnectError(f"connect: starting helper {path}: {e.strerror}",
                               errno=e.errno) from e
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours, pid


def describe_exit(path: str, status: int) -> str:
    """Why a helper that hung up before HELLO's answer ended."""
    if os.WIFEXITED(status):
        return (f"connect: helper {path} exited with status {os.WEXITSTATUS(status)} "
                "before answering hello")
    sig = os.WTERMSIG(status)
    return f"connect: helper {path} was killed by signal {sig} before answering hello"
