"""The client against a lying helper: replies that do not match their requests
end the session with ProtocolError, and a wrong device fd is never handed out."""

from __future__ import annotations

import os
import socket
import struct
import threading
import unittest
from typing import Callable

import loopfd
from loopfd import protocol as P
from loopfd import transport
from loopfd.session import Session

HELLO = struct.pack("<HHIIIII", 1, 2, 7, 16, 600000, 65534, 65534)


def record(dev_id: int, rdev: int) -> bytes:
    return struct.pack("<IIIIQQIIQQQQ", dev_id, 0, os.major(rdev), os.minor(rdev),
                       1, 4096, 16, 512, 0, 0, 0, 0)


class FakeHelper:
    """Answers HELLO properly, then each request with answer(op, seq, fds)."""

    def __init__(self, answer: Callable[[int, int], tuple[bytes, int | None]]) -> None:
        self.ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.answer = answer
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        self.session = Session(theirs)
        self.session.hello()

    def serve(self) -> None:
        try:
            self.serve_until_closed()
        except OSError:  # the test closed our end
            return

    def serve_until_closed(self) -> None:
        while True:
            got = transport.recv(self.ours)
            if not got.data:
                return
            got.close_fds()
            op, seq = struct.unpack_from("<HI", got.data, 6)
            if op == P.OP_HELLO:
                transport.send(self.ours, P.encode(0x81, seq, HELLO))
                continue
            data, fd = self.answer(op, seq)
            transport.send(self.ours, data, fd)

    def close(self) -> None:
        self.session.close()
        self.ours.close()


class LyingHelperTest(unittest.TestCase):
    def fake(self, answer: Callable[[int, int], tuple[bytes, int | None]]) -> Session:
        helper = FakeHelper(answer)
        self.addCleanup(helper.close)
        return helper.session

    def image(self) -> int:
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        return r

    def test_wrong_device_fd_is_refused(self) -> None:
        null = os.open("/dev/null", os.O_RDONLY)
        self.addCleanup(os.close, null)
        s = self.fake(lambda op, seq: (P.encode(0x82, seq, record(1, os.makedev(7, 0))),
                                       null))
        with self.assertRaisesRegex(loopfd.ProtocolError, "not the block device"):
            s.attach(self.image())
        self.assertIn(1, s.held)  # the helper holds it: released at the end
        with self.assertRaisesRegex(loopfd.Error, "unusable"):
            s.list()

    def test_missing_device_fd(self) -> None:
        s = self.fake(lambda op, seq: (P.encode(0x82, seq, record(1, 0)), None))
        with self.assertRaisesRegex(loopfd.ProtocolError, "0 file descriptors, expected 1"):
            s.attach(self.image())

    def test_answer_to_another_request(self) -> None:
        s = self.fake(lambda op, seq: (P.encode(0x84, seq + 1, bytes(8)), None))
        with self.assertRaisesRegex(loopfd.ProtocolError, "answer to request"):
            s.list()

    def test_reply_of_another_op(self) -> None:
        s = self.fake(lambda op, seq: (P.encode(0x83, seq, bytes(8)), None))
        with self.assertRaisesRegex(loopfd.ProtocolError, "operation 0x83 in reply to 0x4"):
            s.list()

    def test_release_reply_naming_another_device(self) -> None:
        s = self.fake(lambda op, seq: (P.encode(0x83, seq, struct.pack("<II", 9, 0)), None))
        with self.assertRaisesRegex(loopfd.ProtocolError, "another device"):
            s.release(3)

    def test_garbage(self) -> None:
        s = self.fake(lambda op, seq: (b"garbage" * 4, None))
        with self.assertRaisesRegex(loopfd.ProtocolError, "malformed"):
            s.list()

    def test_error_reply_keeps_the_session(self) -> None:
        text = b"no such device".ljust(240, b"\0")
        s = self.fake(lambda op, seq: (P.encode(0xFF, seq, struct.pack("<iI", 2, 20) + text),
                                       None))
        for _ in range(2):
            with self.assertRaises(loopfd.UnknownDeviceError) as cm:
                s.release(5)
            self.assertEqual(str(cm.exception),
                             "release of device id 5 failed: no such device")

    def test_helper_gone(self) -> None:
        helper = FakeHelper(lambda op, seq: (b"", None))
        self.addCleanup(helper.session.close)
        helper.ours.close()
        with self.assertRaisesRegex(loopfd.Error, "closed the connection"):
            helper.session.list()


if __name__ == "__main__":
    unittest.main()
