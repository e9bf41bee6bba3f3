"""The Python client against a real helper (setuid, --listen or systemd), as uid 65534."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import unittest

import loopfd

from common import MiB, MODES, connect, detached, make_image, mode, sfdisk, test_dir


class SessionTest(unittest.TestCase):
    def setUp(self) -> None:
        self.mode = mode()
        self.dir = test_dir()

    def test_hello_reports_mode_and_caller(self) -> None:
        with connect() as s:
            self.assertEqual(s.info.mode, MODES[self.mode])
            self.assertEqual(s.info.uid, os.getuid())
            self.assertEqual(s.info.version, 1)
            self.assertEqual(s.info.max_timeout_ms, 600000)

    def test_buffered_writes_are_in_the_image_after_release(self) -> None:
        img = make_image(self.dir, "img", 8 * MiB)
        data = os.urandom(3 * MiB + 4096)
        with connect() as s:
            with open(img, "r+b") as f:
                dev = s.attach(f)
            with dev:
                self.assertEqual(dev.size, 8 * MiB)
                self.assertEqual(dev.path, f"/dev/loop{dev.index}")
                view = memoryview(data)
                while view:
                    view = view[os.write(dev.fd, view):]
                # no fsync: the release must flush
                receipt = dev.release(timeout=10)
            self.assertIsInstance(receipt, loopfd.Receipt)
            self.assertEqual((receipt.id, receipt.path, receipt.image),
                             (dev.id, dev.path, img))
            with open(img, "rb") as f:
                self.assertEqual(f.read(len(data)), data)
            self.assertTrue(detached(dev, 1))
            self.assertEqual(s.list(), [])

    def test_leaving_the_block_releases(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        with connect() as s:
            with s.attach(img) as dev:
                os.write(dev.fd, b"block" * 1000)
            self.assertEqual(dev.fd, -1)
            self.assertNotIn(dev.id, s.held)
        with open(img, "rb") as f:
            self.assertEqual(f.read(5000), b"block" * 1000)

    def test_session_exit_releases_what_is_held(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        with connect() as s:
            dev = s.attach(img)
            os.write(dev.fd, b"held" * 1000)
        self.assertTrue(detached(dev, 1))
        with open(img, "rb") as f:
            self.assertEqual(f.read(4000), b"held" * 1000)

    def test_session_exit_raises_a_failed_release(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        with self.assertRaises(loopfd.BusyError) as cm:
            with connect() as s:
                s.release_timeout = 0.2
                dev = s.attach(img)
                holder = subprocess.Popen(["sleep", "60"], pass_fds=[dev.fd])
                self.addCleanup(holder.wait)
                self.addCleanup(holder.kill)
        self.assertIn(dev.path, str(cm.exception))
        holder.kill()
        self.assertTrue(detached(dev))

    def test_failed_release_does_not_hide_the_exception_in_flight(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        with connect() as s:
            s.release_timeout = 0.2
            with self.assertRaises(KeyError) as cm:
                with s.attach(img) as dev:
                    holder = subprocess.Popen(["sleep", "60"], pass_fds=[dev.fd])
                    self.addCleanup(holder.wait)
                    self.addCleanup(holder.kill)
                    raise KeyError("the stage failed")
            notes = getattr(cm.exception, "__notes__", [])
            self.assertEqual(len(notes), 1, notes)
            self.assertRegex(notes[0], rf"release of {dev.path} \(image {img}\) failed: busy")
        holder.kill()
        self.assertTrue(detached(dev))

    def test_read_only(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB, b"original")
        with connect() as s:
            with s.attach(img, read_only=True) as dev:
                self.assertTrue(dev.read_only)
                with self.assertRaises(OSError):
                    os.write(dev.fd, b"x" * 512)
                self.assertEqual(os.pread(dev.fd, 8, 0), b"original")
            # read_only=True on a file opened read-write: still read-only
            with open(img, "r+b") as f, s.attach(f, read_only=True) as dev:
                self.assertTrue(dev.read_only)
                with self.assertRaises(OSError):
                    os.write(dev.fd, b"x" * 512)
            # a path is opened read-only for read_only=True: a file we may
            # only read can be attached
            os.chmod(img, 0o444)
            with s.attach(img, read_only=True) as dev:
                self.assertEqual(os.pread(dev.fd, 8, 0), b"original")
            with self.assertRaises(loopfd.Error) as cm:
                s.attach(img)
            self.assertIn("read_only=True attaches it read-only", str(cm.exception))
            # a file opened read-only gives a read-only device without the flag
            with open(img, "rb") as f, s.attach(f) as dev:
                self.assertTrue(dev.flags & loopfd.READ_ONLY)
                self.assertEqual(os.fstat(dev.fd).st_rdev, os.makedev(dev.major, dev.minor))
        with open(img, "rb") as f:
            self.assertEqual(f.read(8), b"original")

    def test_offset_and_sizelimit_window(self) -> None:
        pattern = bytes(range(256)) * (16 * MiB // 256)
        img = make_image(self.dir, "img", 16 * MiB, pattern)
        with connect() as s:
            with s.attach(img, offset=1 * MiB, sizelimit=2 * MiB) as dev:
                self.assertEqual((dev.offset, dev.sizelimit, dev.size),
                                 (1 * MiB, 2 * MiB, 2 * MiB))
                self.assertEqual(os.pread(dev.fd, 4096, 0), pattern[MiB:MiB + 4096])
                os.pwrite(dev.fd, b"W" * 4096, 2 * MiB - 4096)
                with self.assertRaises(OSError):  # nothing past the window
                    if os.pwrite(dev.fd, b"X" * 512, 2 * MiB) == 0:
                        raise OSError(errno.ENOSPC, "end of device")
        with open(img, "rb") as f:
            got = f.read()
        self.assertEqual(got[3 * MiB - 4096:3 * MiB], b"W" * 4096)
        self.assertEqual(got[3 * MiB:3 * MiB + 512], pattern[3 * MiB:3 * MiB + 512])
        self.assertEqual(got[:3 * MiB - 4096], pattern[:3 * MiB - 4096])

    def test_sector_size_and_flags(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        with connect() as s:
            with s.attach(img, sector_size=4096, direct_io=True, grant=True) as dev:
                self.assertEqual(dev.sector_size, 4096)
                self.assertTrue(dev.flags & loopfd.GRANT)
                self.assertTrue(dev.flags & loopfd.AUTOCLEAR)
                self.assertEqual(os.stat(dev.path).st_uid, os.getuid())
            self.assertNotEqual(os.stat(dev.path).st_uid, os.getuid())

    def test_list_and_ids(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        with connect() as s:
            a = s.attach(img)
            b = s.attach(img, read_only=True)
            self.assertEqual([d.id for d in s.list()], [a.id, b.id])
            self.assertEqual(s.list()[0].fd, -1)
            self.assertEqual(s.list()[1].image, img)
            a.release()
            self.assertEqual([d.id for d in s.list()], [b.id])
            c = s.attach(img)
            self.assertGreater(c.id, b.id)  # ids are never reused
            self.assertEqual([d.id for d in s.list()], [b.id, c.id])

    def test_release_by_id_and_unknown_id(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        with connect() as s:
            dev = s.attach(img)
            receipt = s.release(dev.id)
            self.assertEqual(receipt.path, dev.path)
            with self.assertRaises(loopfd.UnknownDeviceError) as cm:
                s.release(dev.id)
            self.assertEqual(cm.exception.reason, loopfd.Reason.UNKNOWN_DEVICE)
            self.assertEqual(cm.exception.errno, errno.ENOENT)
            self.assertIn(f"device id {dev.id}", str(cm.exception))

    def test_busy_release_then_detach_with_data_intact(self) -> None:
        img = make_image(self.dir, "img", 8 * MiB)
        data = os.urandom(2 * MiB)
        with connect() as s:
            dev = s.attach(img)
            os.write(dev.fd, data)
            holder = subprocess.Popen(["sleep", "60"], pass_fds=[dev.fd])
            try:
                with self.assertRaises(loopfd.BusyError) as cm:
                    dev.release(timeout=0.3)
                e = cm.exception
                self.assertEqual(e.reason, loopfd.Reason.BUSY)
                self.assertEqual(e.errno, errno.EBUSY)
                self.assertIn(dev.path, str(e))
                self.assertIn(img, str(e))
                self.assertIn("release of", str(e))
                self.assertFalse(detached(dev, 0.2))
            finally:
                holder.kill()
                holder.wait()
            self.assertTrue(detached(dev), "busy device did not detach after the holder")
        with open(img, "rb") as f:
            self.assertEqual(f.read(len(data)), data)

    def test_sigkilled_client_gets_its_devices_flushed_and_detached(self) -> None:
        img = make_image(self.dir, "img", 8 * MiB)
        data = os.urandom(MiB)
        src = make_image(self.dir, "data", len(data), data)
        child = textwrap.dedent(f"""
            import os, sys, loopfd
            s = loopfd.connect()
            dev = s.attach({img!r})
            with open({src!r}, "rb") as f:
                os.write(dev.fd, f.read())
            print(dev.name, dev.diskseq, flush=True)
            sys.stdin.read()
        """)
        with subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as proc:
            try:
                assert proc.stdout is not None
                name, seq = proc.stdout.readline().split()
            finally:
                proc.send_signal(signal.SIGKILL)
            # (a setuid helper lets go of the client's stderr once its
            # session runs: nothing of its log comes back here)
            proc.communicate(timeout=30)
        dev = loopfd.Device(-1, 0, int(name[4:]), name, "/dev/" + name, 0, 0, int(seq),
                            0, 0, 0, 0, 0, 0, 0)
        deadline = time.monotonic() + 15
        while not detached(dev) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(detached(dev), f"{name} still attached 15 s after the client died")
        with open(img, "rb") as f:
            self.assertEqual(f.read(len(data)), data)

    def test_partition_of_gpt_reached_by_type_and_label(self) -> None:
        for ss in (512, 4096):
            with self.subTest(sector_size=ss):
                self._gpt_partition(ss)

    def _gpt_partition(self, ss: int) -> None:
        img = make_image(self.dir, f"gpt{ss}", 64 * MiB)
        sfdisk(img, ss, "label: gpt\n"
               "size=8MiB, type=uefi, name=EFI\n"
               "size=16MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=rootfs\n")
        table = loopfd.read_table(img)
        self.assertEqual(table.sector_size, ss)
        esp, root = loopfd.select(table, "esp"), loopfd.select(table, "rootfs")
        self.assertEqual(loopfd.select(table, "root"), root)
        with connect() as s:
            for part, mark in ((esp, b"E"), (root, b"R")):
                with s.attach(img, offset=part.start_bytes, sizelimit=part.size_bytes,
                              sector_size=table.sector_size) as dev:
                    self.assertEqual((dev.size, dev.sector_size), (part.size_bytes, ss))
                    os.pwrite(dev.fd, mark * ss, 0)
                    os.pwrite(dev.fd, mark * ss, part.size_bytes - ss)
        with open(img, "rb") as f:
            for part, mark in ((esp, b"E"), (root, b"R")):
                self.assertEqual(os.pread(f.fileno(), ss, part.start_bytes), mark * ss)
                self.assertEqual(os.pread(f.fileno(), ss, part.start_bytes + part.size_bytes - ss),
                                 mark * ss)
                self.assertNotEqual(os.pread(f.fileno(), 1, part.start_bytes - 1), mark)
        self.assertEqual(loopfd.read_table(img).partitions, table.partitions)
        with connect() as s, s.attach_partition(img, root, read_only=True) as dev:
            self.assertEqual((dev.offset, dev.sizelimit, dev.sector_size),
                             (root.start_bytes, root.size_bytes, ss))
            self.assertEqual(dev.image, f"{img} partition 2")
            self.assertEqual(os.pread(dev.fd, 1, 0), b"R")


class SetuidTest(unittest.TestCase):
    def setUp(self) -> None:
        if mode() != "setuid":
            self.skipTest("setuid mode only")

    def test_helper_that_dies_before_hello_is_explained(self) -> None:
        child = textwrap.dedent("""
            import resource, loopfd
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
            try:
                loopfd.connect()
            except loopfd.ConnectError as e:
                print(e)
        """)
        out = subprocess.run([sys.executable, "-c", child], capture_output=True,
                             text=True, check=True)
        self.assertRegex(out.stdout, r"connect: helper /\S+ exited with status 1 before "
                                     "answering hello")
        self.assertIn("RLIMIT_NOFILE", out.stderr)  # the helper's own log line

    def test_helper_is_reaped_when_nothing_is_held(self) -> None:
        s = connect()
        pid = s._helper_pid
        assert pid is not None
        s.close()
        with self.assertRaises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


class CliRunTest(unittest.TestCase):
    """python3 -m loopfd run: exit statuses and releases, as the C CLI."""

    def setUp(self) -> None:
        mode()
        self.dir = test_dir()

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loopfd", "run", *args],
                              capture_output=True, text=True, timeout=60)

    def test_data_and_status(self) -> None:
        a = make_image(self.dir, "a", 4 * MiB)
        b = make_image(self.dir, "b", 4 * MiB)
        r = self.run_cli("-v", "--lock", a, b, "--", "sh", "-c",
                         'printf A >&3; printf B >&4; echo "$LOOPFD_DEVICES"; exit 7')
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertEqual(r.stdout.strip(), "/dev/fd/3 /dev/fd/4")
        self.assertIn("loopfd: released /dev/loop", r.stderr)
        for path, mark in ((a, b"A"), (b, b"B")):
            with open(path, "rb") as f:
                self.assertEqual(f.read(1), mark)
        self.assertEqual(self.run_cli(a, "--", "no-such-command-here").returncode, 127)
        r = self.run_cli("-r", "-o", "1MiB", "--sizelimit", "1MiB", a, "--", "sh", "-c",
                         "blockdev --getsize64 /dev/fd/3 2>/dev/null; "
                         "printf x >&3 2>/dev/null && exit 9; exit 0")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_failed_release_fails_the_run(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        r = self.run_cli("--release-timeout", "0.2", img, "--", "sh", "-c",
                         "sleep 2 <&3 & exit 0")
        self.assertEqual(r.returncode, 1)
        m = re.search(rf"loopfd: release of /dev/(loop\d+) \(image {img}\) failed: busy",
                      r.stderr)
        assert m is not None, r.stderr
        # the holder exits within seconds; its device (and quota slot) goes then
        with open(f"/sys/block/{m[1]}/diskseq") as f:
            seq = int(f.read())
        dev = loopfd.Device(-1, 0, int(m[1][4:]), m[1], "", 0, 0, seq, 0, 0, 0, 0, 0, 0, 0)
        self.assertTrue(detached(dev))

    def test_signal_reaches_the_command(self) -> None:
        img = make_image(self.dir, "img", 4 * MiB)
        p = subprocess.Popen([sys.executable, "-m", "loopfd", "run", img, "--", "sh", "-c",
                              'trap "printf T >&3; exit 5" TERM; echo up; '
                              'while :; do sleep 0.05; done'],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.addCleanup(p.wait)
        self.addCleanup(kill_group, p.pid)  # only if the test failed
        assert p.stdout is not None
        with p.stdout:
            self.assertEqual(p.stdout.readline().strip(), "up")
        p.send_signal(signal.SIGTERM)
        try:
            self.assertEqual(p.wait(timeout=20), 5)
        except subprocess.TimeoutExpired:
            self.fail("SIGTERM did not reach the command")
        with open(img, "rb") as f:
            self.assertEqual(f.read(1), b"T")


def kill_group(pgid: int) -> None:
    """SIGKILL a process group this test started, if anything is left of it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ApiErrorTest(unittest.TestCase):
    """Refusals a client provokes through the API map to their exceptions."""

    def setUp(self) -> None:
        mode()
        self.dir = test_dir()
        self.session = connect()
        self.addCleanup(self.session.__exit__, None, None, None)

    def refused(self, exc: type[loopfd.HelperError], image: object, **kw: object) -> str:
        with self.assertRaises(exc) as cm:
            self.session.attach(image, **kw)  # type: ignore[arg-type]
        e = cm.exception
        self.assertIsInstance(e, loopfd.Error)
        self.assertEqual(e.reason, exc.reason)
        self.assertEqual(e.errno, exc.default_errno)
        self.assertTrue(e.text)
        return str(e)

    def test_backing_kind(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.refused(loopfd.BackingKindError, fd)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.refused(loopfd.BackingKindError, r)

    def test_backing_access(self) -> None:
        img = make_image(self.dir, "img", MiB)
        for flags in (os.O_WRONLY, os.O_RDWR | os.O_APPEND, os.O_PATH):
            fd = os.open(img, flags)
            self.addCleanup(os.close, fd)
            self.refused(loopfd.BackingAccessError, fd)

    def test_backing_fs(self) -> None:
        with open("/proc/self/status", "rb") as f:
            self.refused(loopfd.BackingFsError, f)

    def test_backing_loop(self) -> None:
        img = make_image(self.dir, "img", MiB)
        with self.session.attach(img) as dev:
            msg = self.refused(loopfd.BackingLoopError, dev.fd)
            self.assertIn(f"fd {dev.fd}: attach: helper refused:", msg)

    def test_bad_options(self) -> None:
        img = make_image(self.dir, "img", MiB)
        self.refused(loopfd.BadOptionError, img, sector_size=1000)
        self.refused(loopfd.BadOptionError, img, offset=100)
        self.refused(loopfd.BadOptionError, img, offset=MiB)
        self.refused(loopfd.BadOptionError, img, offset=512, sizelimit=MiB)
        empty = make_image(self.dir, "empty", 0)
        msg = self.refused(loopfd.BadOptionError, empty)
        self.assertIn(empty, msg)
        dev = self.session.attach(img)
        with self.assertRaises(loopfd.BadOptionError):
            self.session.release(dev, timeout=601)
        self.assertIn(dev.id, self.session.held)  # nothing was done: still held

    def test_no_grant_of_a_read_only_device(self) -> None:
        img = make_image(self.dir, "img", MiB)
        msg = self.refused(loopfd.BadOptionError, img, read_only=True, grant=True)
        self.assertIn("read-only", msg)
        with open(img, "rb") as f:
            self.refused(loopfd.BadOptionError, f, grant=True)

    def test_odd_sized_file_loses_its_tail(self) -> None:
        img = make_image(self.dir, "img", MiB + 100)
        with self.session.attach(img) as dev:
            self.assertEqual(dev.size, MiB)

    def test_limit(self) -> None:
        img = make_image(self.dir, "img", MiB)
        limit = self.session.info.max_devices
        # A device released busy by an earlier test keeps its quota slot
        # until the helper's once-a-second check sees it detached: retry.
        deadline = time.monotonic() + 5
        while True:
            devs = []
            with self.assertRaises(loopfd.LimitError) as cm:
                for _ in range(limit + 1):
                    devs.append(self.session.attach(img, read_only=True))
            self.session.release_all()
            if len(devs) == limit or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(len(devs), limit)
        self.assertIsInstance(cm.exception, loopfd.QuotaUserError)
        self.assertEqual(cm.exception.errno, errno.EDQUOT)

if __name__ == "__main__":
    unittest.main()
