"""Shared by the tests: where to work and how to reach the helper.

tests/integration/t_python.sh sets, per run:
  LOOPFD_TEST_DIR   a directory this uid may write (files are made here)
  LOOPFD_TEST_MODE  setuid, listen or systemd: the mode the helper must report
  LOOPFD_SOCKET     the daemon's socket (listen, systemd); unset for setuid
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import unittest
from collections.abc import Sequence

import loopfd
from loopfd import protocol as P
from loopfd import session as S
from loopfd import spawn

MODES = {"setuid": P.MODE_SETUID, "listen": P.MODE_LISTEN, "systemd": P.MODE_SYSTEMD}
MiB = 1 << 20


def test_dir() -> str:
    """A fresh directory under LOOPFD_TEST_DIR."""
    base = os.environ.get("LOOPFD_TEST_DIR")
    if not base:
        raise unittest.SkipTest("LOOPFD_TEST_DIR not set (run by t_python.sh)")
    return tempfile.mkdtemp(dir=base)


def mode() -> str:
    """The helper mode under test."""
    m = os.environ.get("LOOPFD_TEST_MODE", "")
    if m not in MODES:
        raise unittest.SkipTest("LOOPFD_TEST_MODE not set (run by t_python.sh)")
    return m


def make_image(directory: str, name: str, size: int, data: bytes = b"") -> str:
    """A sparse file of size bytes starting with data."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(size)
    return path


def raw_socket() -> socket.socket:
    """A connection to the helper under test, without HELLO."""
    path = os.environ.get("LOOPFD_SOCKET")
    if path:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        return s
    sock, _pid = spawn.spawn(spawn.helper_path())
    return sock


def ask(sock: socket.socket, data: bytes, fd: int | Sequence[int] | None = None) -> P.Reply:
    """Send raw bytes, return the decoded reply (fds that came are closed)."""
    from loopfd import transport
    transport.send(sock, data, fd)
    got = transport.recv(sock)
    got.close_fds()
    return P.decode_reply(got.data)


def detached(dev: S.Device, timeout: float = 15.0) -> bool:
    """Wait until dev's binding (its disk sequence number) is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/sys/block/{dev.name}/diskseq") as f:
                seq = int(f.read())
            bound = os.path.exists(f"/sys/block/{dev.name}/loop/backing_file")
        except OSError:
            return True
        if seq != dev.diskseq or not bound:
            return True
        time.sleep(0.05)
    return False


def connect() -> loopfd.Session:
    """A session with the helper under test (socket from the environment)."""
    return loopfd.connect()


def sfdisk(image: str, sector_size: int, script: str, *args: str) -> str:
    """Run sfdisk on image with the given logical sector size; its stdout.

    sfdisk takes a regular file's sector size as 512: for another size it
    runs on a loop device of that sector size, attached through loopfd with
    grant (so that sfdisk, as this uid, can open its path).
    """
    import subprocess
    cmd = ["sfdisk", "--no-reread", "--no-tell-kernel", *args]
    if sector_size == 512:
        return subprocess.run(cmd + [image], input=script, text=True, check=True,
                              capture_output=True).stdout
    with connect() as s, s.attach(image, sector_size=sector_size, grant=True) as dev:
        return subprocess.run(cmd + [dev.path], input=script, text=True, check=True,
                              capture_output=True).stdout
