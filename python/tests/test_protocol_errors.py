"""Every protocol error a client can provoke, with raw messages made with struct,
maps to its exception; and the order of checks PROTOCOL.md states holds."""

from __future__ import annotations

import os
import socket
import struct
import time
import unittest
from collections.abc import Sequence

import loopfd
from loopfd import errors, protocol as P, transport

from common import MiB, ask, make_image, mode, raw_socket, test_dir


def exception_for(reply: P.Reply) -> loopfd.HelperError:
    assert isinstance(reply.body, P.ErrorReply), f"not an error: {reply}"
    b = reply.body
    return errors.from_reply("test", b.errno, b.reason, b.text)


class RawProtocolTest(unittest.TestCase):
    def setUp(self) -> None:
        mode()
        self.dir = test_dir()
        self.sock = raw_socket()
        self.addCleanup(self.sock.close)
        self.img = make_image(self.dir, "img", MiB)
        self.img_fd = os.open(self.img, os.O_RDWR)
        self.addCleanup(os.close, self.img_fd)

    def expect(self, exc: type[loopfd.HelperError], data: bytes,
               fd: int | Sequence[int] | None = None,
               seq: int | None = None) -> loopfd.HelperError:
        reply = ask(self.sock, data, fd)
        e = exception_for(reply)
        self.assertIs(type(e), exc, f"{e} ({e.reason})")
        self.assertEqual(e.errno, exc.default_errno)
        if seq is not None:
            self.assertEqual(reply.seq, seq)
        return e

    def hello(self) -> None:
        reply = ask(self.sock, P.hello(100))
        self.assertEqual(reply.op, P.OP_HELLO | P.REPLY)

    def test_before_hello(self) -> None:
        self.expect(loopfd.NoHelloError, P.list_devices(1), seq=1)
        self.expect(loopfd.NoHelloError, P.encode(P.OP_HELLO | P.REPLY, 2, bytes(24)))
        # format and fd-count errors take precedence over NO_HELLO
        self.expect(loopfd.UnknownOpError, P.encode(9, 3), seq=3)
        self.expect(loopfd.VersionError, P.encode(P.OP_LIST, 4, version=2), seq=4)
        self.expect(loopfd.FdCountError, P.list_devices(5), self.img_fd)
        e = self.expect(loopfd.FdCountError, P.encode(P.OP_ATTACH | P.REPLY, 6, bytes(72)))
        self.assertIn("takes no file descriptors", e.text)  # as PROTOCOL.md says
        self.expect(loopfd.MalformedError, P.encode(P.OP_LIST, 7, b"x"))

    def test_version_range(self) -> None:
        self.expect(loopfd.VersionError, P.hello(1, 2, 3))
        self.expect(loopfd.VersionError, P.hello(2, 1, 0))
        self.hello()
        self.hello()  # a second HELLO is answered like the first

    def test_malformed(self) -> None:
        self.hello()
        good = P.list_devices(9)
        self.expect(loopfd.MalformedError, b"XXXX" + good[4:], seq=9)
        self.expect(loopfd.MalformedError, good[:12] + struct.pack("<I", 4) + b"abcd")
        self.expect(loopfd.MalformedError, b"abc", seq=0)
        self.expect(loopfd.MalformedError, P.encode(P.OP_HELLO, 10, struct.pack("<HHI", 1, 1, 7)))
        self.expect(loopfd.MalformedError, bytes(P.MAX_MSG + 1))
        # an unknown flag with a non-zero reserved field: MALFORMED first
        body = struct.pack("<IIQQQ", 0x100, 0, 0, 0, 1)
        self.expect(loopfd.MalformedError, P.encode(P.OP_ATTACH, 11, body), self.img_fd)

    def test_after_hello(self) -> None:
        self.hello()
        e = self.expect(loopfd.UnknownOpError, P.encode(P.OP_HELLO | P.REPLY, 20, bytes(24)))
        self.assertIn("not requests", e.text)
        self.expect(loopfd.UnknownOpError, P.encode(P.OP_ERROR | 0, 21, bytes(P.ERROR_SIZE)))
        self.expect(loopfd.FdCountError, P.attach(22, 0, 0, 0, 0))
        self.expect(loopfd.BadOptionError, P.attach(23, 0x100, 0, 0, 0), self.img_fd)
        self.expect(loopfd.BadOptionError, P.attach(24, 0, 3000, 0, 0), self.img_fd)
        # UNKNOWN_DEVICE before BAD_OPTION
        self.expect(loopfd.UnknownDeviceError, P.release(25, 77, P.MAX_TIMEOUT_MS + 1))
        reply = ask(self.sock, P.list_devices(26))
        self.assertEqual((reply.op, reply.body), (P.OP_LIST | P.REPLY, []))

    def test_batches(self) -> None:
        """Hostile batch requests: refused as a whole, nothing attached or released."""
        self.expect(loopfd.NoHelloError, P.release_batch(30, [1], 0), seq=30)
        # the batch reply ops are checked as replies, as 0x81 ... 0x84 are
        outcome = struct.pack("<II", 1, 0) + bytes(256)
        self.expect(loopfd.NoHelloError, P.encode(P.OP_RELEASE_BATCH | P.REPLY, 45, outcome))
        self.hello()
        self.expect(loopfd.UnknownOpError, P.encode(P.OP_RELEASE_BATCH | P.REPLY, 46, outcome))
        e = self.expect(loopfd.FdCountError, P.encode(P.OP_ATTACH_BATCH | P.REPLY, 47,
                                                      struct.pack("<II", 1, 0) + bytes(72)))
        self.assertIn("takes no file descriptors", e.text)
        reply = ask(self.sock, P.attach(31, 0, 0, 0, 0), self.img_fd)
        assert isinstance(reply.body, P.DeviceRecord)
        held = reply.body.id
        head = struct.Struct("<II")
        # N over 64, N of 0, N against the body: MALFORMED
        ids = b"".join(struct.pack("<I", held) for _ in range(65))
        self.expect(loopfd.MalformedError,
                    P.encode(P.OP_RELEASE_BATCH, 32, head.pack(65, 0) + ids), seq=32)
        self.expect(loopfd.MalformedError, P.encode(P.OP_RELEASE_BATCH, 33, head.pack(0, 0)))
        self.expect(loopfd.MalformedError,
                    P.encode(P.OP_RELEASE_BATCH, 34, head.pack(2, 0) + ids[:4]))
        entries = [(0, 0, 0, 0)] * 65
        self.expect(loopfd.MalformedError, P.attach_batch(35, entries), [self.img_fd] * 65)
        # reserved field of an ATTACH_BATCH
        body = P.attach_batch(36, [(0, 0, 0, 0)])
        self.expect(loopfd.MalformedError, body[:20] + b"\1" + body[21:], self.img_fd)
        # fds: N of them, none for RELEASE_BATCH
        e = self.expect(loopfd.FdCountError, P.attach_batch(37, [(0, 0, 0, 0)] * 2),
                        self.img_fd)
        self.assertNotIn("entry", e.text)
        self.expect(loopfd.FdCountError, P.release_batch(38, [held], 0), self.img_fd)
        # duplicate ids and a timeout over the bound: BAD_OPTION, nothing released
        e = self.expect(loopfd.BadOptionError, P.release_batch(39, [held, 5, held], 0), seq=39)
        self.assertIn("entries 0 and 2", e.text)
        self.expect(loopfd.BadOptionError, P.release_batch(40, [held], P.MAX_TIMEOUT_MS + 1))
        reply = ask(self.sock, P.list_devices(41))
        assert isinstance(reply.body, list)
        self.assertEqual([r.id for r in reply.body], [held])
        # an entry refused: the error names it, earlier entries undone
        e = self.expect(loopfd.BadOptionError,
                        P.attach_batch(42, [(0, 0, 0, 0), (0, 3000, 0, 0)]),
                        [self.img_fd, self.img_fd])
        self.assertTrue(e.text.startswith("entry 1: "), e.text)
        reply = ask(self.sock, P.list_devices(43))
        assert isinstance(reply.body, list)
        self.assertEqual(len(reply.body), 1)
        # and the good one: one outcome, released, in a reply decoded whole
        reply = ask(self.sock, P.release_batch(44, [held], 5000))
        self.assertEqual(reply.op, P.OP_RELEASE_BATCH | P.REPLY)
        assert isinstance(reply.body, P.ReleaseBatchReply)
        self.assertEqual([(o.id, o.reason) for o in reply.body.outcomes], [(held, 0)])

    def test_session_survives_refusals(self) -> None:
        self.hello()
        for i in range(50):
            self.expect(loopfd.MalformedError, P.encode(P.OP_LIST, i, b"junk"))
        reply = ask(self.sock, P.attach(99, 0, 0, 0, 0), self.img_fd)
        self.assertEqual(reply.op, P.OP_ATTACH | P.REPLY)
        assert isinstance(reply.body, P.DeviceRecord)
        self.assertEqual(reply.body.id, 1)
        reply = ask(self.sock, P.release(100, reply.body.id, 5000))
        self.assertEqual(reply.op, P.OP_RELEASE | P.REPLY)


class DeadlineTest(unittest.TestCase):
    """PROTOCOL.md's two deadlines, measured together (one 11-second wait)."""

    def setUp(self) -> None:
        mode()

    def test_hello_deadline_and_unread_replies(self) -> None:
        silent = raw_socket()        # never says HELLO: closed after 10 s
        lazy = raw_socket()          # HELLO, then 200 requests it does not read yet
        stuck = raw_socket()         # HELLO, then requests until the helper's send blocks
        for sock in (silent, lazy, stuck):
            self.addCleanup(sock.close)
            sock.settimeout(30)  # a wrong guess fails, never hangs
        transport.send(silent, P.encode(9, 1))  # junk does not extend the deadline
        self.assertEqual(ask(lazy, P.hello(1)).op, P.OP_HELLO | P.REPLY)
        self.assertEqual(ask(stuck, P.hello(1)).op, P.OP_HELLO | P.REPLY)
        for seq in range(2, 202):
            transport.send(lazy, P.list_devices(seq))
        # Send until our sends stay blocked for a second: the helper then
        # no longer reads, as its own send of a reply is blocked.
        stuck.setblocking(False)
        sent, blocked_since = 0, None
        while blocked_since is None or time.monotonic() - blocked_since < 1:
            try:
                transport.send(stuck, P.list_devices(sent + 2))
                sent, blocked_since = sent + 1, None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                time.sleep(0.05)
        stuck.setblocking(True)
        stuck.settimeout(30)
        time.sleep(11)
        # the silent one: its one error reply, then the end
        self.assertEqual(exception_for(ask_reply(silent)).reason, P.Reason.UNKNOWN_OP)
        silent.settimeout(1)  # closed already, not merely later
        self.assertEqual(transport.recv(silent).data, b"")
        # the lazy one: all 200 replies in order, and the session still serves
        for seq in range(2, 202):
            self.assertEqual(P.decode_reply(transport.recv(lazy).data).seq, seq)
        self.assertEqual(ask(lazy, P.list_devices(999)).seq, 999)
        # the stuck one: the end (the helper's send blocked 10 s); the requests
        # it left unread make the kernel report a reset rather than EOF
        got = 0
        try:
            while transport.recv(stuck).data:
                got += 1
        except ConnectionResetError:
            pass
        self.assertLess(got, sent)
        with self.assertRaises(OSError):
            ask(stuck, P.list_devices(1))


def ask_reply(sock: socket.socket) -> P.Reply:
    return P.decode_reply(transport.recv(sock).data)


class MappingTest(unittest.TestCase):
    """Every documented reason has its own class, errno and message form."""

    def test_every_reason(self) -> None:
        seen = set()
        for reason in P.Reason:
            if reason == P.Reason.NONE:
                continue
            e = errors.from_reply("attach", 0, reason, "the helper's words")
            self.assertIsInstance(e, loopfd.Error)
            self.assertEqual(e.reason, reason)
            self.assertEqual(str(e), "attach: helper refused: the helper's words")
            self.assertEqual(e.text, "the helper's words")
            self.assertNotIn(type(e), seen)
            seen.add(type(e))
            self.assertEqual(getattr(loopfd, type(e).__name__), type(e))
        self.assertTrue(issubclass(loopfd.QuotaUserError, loopfd.LimitError))
        self.assertEqual(errors.from_reply("x", 5, 23, "t").errno, 5)
        self.assertEqual(errors.from_reply("x", 99999, 23, "t").errno, 16)
        self.assertIs(type(errors.from_reply("x", 1, 200, "t")), loopfd.HelperError)

    def test_decoder_refuses_bad_replies(self) -> None:
        bad = [b"", b"x" * 15, P.encode(0x81, 1, bytes(23)),
               P.encode(0x84, 1, struct.pack("<II", 1, 0)),
               P.encode(0x84, 1, struct.pack("<II", 65, 0) + bytes(72 * 65)),
               P.encode(0xFF, 1, bytes(8) + b"x" * 240),
               P.encode(0x81, 1, bytes(24), version=2), P.encode(0x02, 1, bytes(32))]
        for data in bad:
            with self.assertRaises(P.DecodeError):
                P.decode_reply(data)
        batch_bad = [P.encode(0x86, 1, struct.pack("<II", 0, 0)),
                     P.encode(0x86, 1, struct.pack("<II", 65, 0) + bytes(256 * 65)),
                     P.encode(0x86, 1, struct.pack("<II", 1, 0) + bytes(255)),
                     P.encode(0x85, 1, struct.pack("<II", 1, 1) + bytes(72)),
                     P.encode(0x85, 1, struct.pack("<II", 2, 0) + bytes(72))]
        for data in batch_bad:
            with self.assertRaises(P.DecodeError):
                P.decode_reply(data)
        # the largest reply: 64 outcomes, 16408 bytes
        outcome = struct.pack("<IIiI", 7, 23, 16, 300) + b"busy".ljust(240, b"\0")
        big = P.encode(0x86, 2, struct.pack("<II", 64, 0) + outcome * 64)
        self.assertEqual(len(big), P.MAX_REPLY)
        rep = P.decode_reply(big)
        assert isinstance(rep.body, P.ReleaseBatchReply)
        self.assertEqual(rep.body.outcomes[63], P.Outcome(7, 23, 16, 300, "busy"))
        text = P.decode_reply(P.encode(0xFF, 1, bytes(8) + b"a\x1b[31mb\0".ljust(240, b"\0")))
        assert isinstance(text.body, P.ErrorReply)
        self.assertEqual(text.body.text, "a?[31mb")


if __name__ == "__main__":
    unittest.main()
