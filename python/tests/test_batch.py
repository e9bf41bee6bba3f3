"""Batched operations (ATTACH_BATCH, RELEASE_BATCH) against a real helper, in
one request each way and through the one-by-one fallback for a helper
without FEAT_BATCH (the same session with the feature bit cleared).

BatchTest needs a per-user limit of at least 41 devices and LimitTest one
of 3: tests/integration/t_python.sh writes the policy for each.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import os
import subprocess
import sys
import time
import unittest
from typing import IO

import loopfd
from loopfd import protocol as P

from common import MiB, connect, detached, make_image, mode, test_dir

IMAGES = 41


def attached_images() -> set[str]:
    """The backing files of every loop device (to see that none is ours)."""
    found = set()
    for path in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(path) as f:
                found.add(f.read().strip())
        except OSError:
            pass  # detached meanwhile
    return found


def one_by_one(s: loopfd.Session) -> None:
    """Make s use the fallback of a helper without FEAT_BATCH."""
    s.info = dataclasses.replace(s.info, features=s.info.features & ~P.FEAT_BATCH)


class BatchTest(unittest.TestCase):
    def setUp(self) -> None:
        mode()
        self.dir = test_dir()
        self.session = connect()
        self.addCleanup(self.session.close)
        self.assertTrue(self.session.batched, "the helper does not say FEAT_BATCH")

    def images(self, n: int, size: int = 2 * MiB) -> list[str]:
        return [make_image(self.dir, f"img{i}", size) for i in range(n)]

    def attach_write_release(self, n: int) -> None:
        """n images in one batch (as paths, open files and AttachEntry with a
        window), buffered writes never fsynced, one release batch."""
        paths = self.images(n)
        files = [open(p, "r+b") for p in paths[1::3]]
        for f in files:
            self.addCleanup(f.close)
        entries: list[loopfd.AttachEntry | str | IO[bytes]] = []
        for i, p in enumerate(paths):
            if i % 3 == 1:
                entries.append(files[i // 3])
            elif i % 3 == 2:
                entries.append(loopfd.AttachEntry(p, offset=MiB, sizelimit=MiB // 2,
                                                  name=f"window of {p}"))
            else:
                entries.append(p)
        devs = self.session.attach_batch(entries)
        self.assertEqual(len(devs), n)
        self.assertEqual(len({d.id for d in devs}), n)
        self.assertEqual(sorted(self.session.held), sorted(d.id for d in devs))
        data = {}
        for i, (dev, p) in enumerate(zip(devs, paths)):
            self.assertEqual(dev.image, f"window of {p}" if i % 3 == 2 else p)
            self.assertEqual(dev.size, MiB // 2 if i % 3 == 2 else 2 * MiB)
            data[i] = f"image {i} of {n} ".encode() * 4000
            self.assertEqual(os.write(dev.fd, data[i]), len(data[i]))
        results = self.session.release_batch(devs, timeout=10)
        self.assertEqual([r.id for r in results], [d.id for d in devs])
        for r, dev in zip(results, devs):
            self.assertTrue(r.ok, r.error)
            self.assertEqual((r.path, r.image), (dev.path, dev.image))
            self.assertIsInstance(r.receipt(), loopfd.Receipt)
            self.assertEqual(dev.fd, -1)
        self.assertEqual(self.session.held, {})
        self.assertEqual(self.session.list(), [])
        for i, (dev, p) in enumerate(zip(devs, paths)):
            self.assertTrue(detached(dev, 1), dev)
            with open(p, "rb") as f:
                f.seek(MiB if i % 3 == 2 else 0)
                self.assertEqual(f.read(len(data[i])), data[i], f"data of {p}")

    def test_41_images_in_one_batch_each_way(self) -> None:
        self.assertGreaterEqual(self.session.info.max_devices, IMAGES,
                                "t_python.sh sets max-devices-per-user 64 for this")
        self.attach_write_release(IMAGES)

    def test_fallback_without_the_feature(self) -> None:
        one_by_one(self.session)
        self.attach_write_release(7)

    def fail_at_entry(self, bad: int) -> None:
        paths = self.images(6)
        empty = make_image(self.dir, "empty", 0)  # "offset 0 is beyond the end"
        paths[bad] = empty
        with self.assertRaises(loopfd.BadOptionError) as cm:
            self.session.attach_batch(paths)
        e = cm.exception
        self.assertEqual(e.entry, bad)
        self.assertEqual(e.errno, errno.EINVAL)
        self.assertIn(f"entry {bad}: ", str(e))
        self.assertTrue(str(e).startswith(f"{empty}: attach: "), str(e))
        self.assertFalse(e.text.startswith("entry"), e.text)
        self.assertEqual(self.session.held, {})
        self.assertEqual(self.session.list(), [])
        self.assertFalse(set(paths) & attached_images(), "a device of the batch stayed")
        # the session goes on
        devs = self.session.attach_batch(paths[:bad])
        self.assertTrue(all(r.ok for r in self.session.release_batch(devs)))

    def test_failure_at_entry_k_attaches_nothing(self) -> None:
        self.fail_at_entry(4)

    def test_failure_at_entry_k_attaches_nothing_one_by_one(self) -> None:
        one_by_one(self.session)
        self.fail_at_entry(3)

    def busy_one(self) -> None:
        paths = self.images(4)
        devs = self.session.attach_batch(paths)
        data = [os.urandom(MiB) for _ in devs]
        for dev, d in zip(devs, data):
            os.write(dev.fd, d)
        holder = subprocess.Popen(["sleep", "60"], pass_fds=[devs[2].fd])
        try:
            results = self.session.release_batch(devs, timeout=0.3)
            self.assertEqual([r.id for r in results], [d.id for d in devs])
            for i, r in enumerate(results):
                if i != 2:
                    self.assertTrue(r.ok, r.error)
                    self.assertTrue(detached(devs[i], 1))
            busy = results[2].error
            self.assertIsInstance(busy, loopfd.BusyError)
            assert busy is not None
            self.assertEqual((busy.reason, busy.errno), (loopfd.Reason.BUSY, errno.EBUSY))
            self.assertIn(f"release of {devs[2].path} (image {paths[2]}) failed: ",
                          str(busy))
            with self.assertRaises(loopfd.BusyError):
                results[2].receipt()
            self.assertEqual(self.session.held, {})  # released busy: gone from the session
            self.assertFalse(detached(devs[2], 0.2))
        finally:
            holder.kill()
            holder.wait()
        self.assertTrue(detached(devs[2]), "busy device did not detach after the holder")
        for p, d in zip(paths, data):
            with open(p, "rb") as f:
                self.assertEqual(f.read(len(d)), d, f"data of {p}")

    def test_release_batch_with_one_busy_device(self) -> None:
        self.busy_one()

    def test_release_batch_with_one_busy_device_one_by_one(self) -> None:
        one_by_one(self.session)
        self.busy_one()

    def test_session_end_releases_in_one_request(self) -> None:
        paths = self.images(5)
        with self.assertRaises(loopfd.BusyError) as cm:
            with connect() as s:
                s.release_timeout = 0.3
                devs = s.attach_batch(paths)
                for dev in devs:
                    os.write(dev.fd, b"end" * 1000)
                holder = subprocess.Popen(["sleep", "60"], pass_fds=[devs[3].fd])
                self.addCleanup(holder.wait)
                self.addCleanup(holder.kill)
                seq = s._seq
        self.assertEqual(s._seq, seq + 1, "not one release request")
        self.assertIn(devs[3].path, str(cm.exception))
        holder.kill()
        for dev, p in zip(devs, paths):
            self.assertTrue(detached(dev), dev)
            with open(p, "rb") as f:
                self.assertEqual(f.read(3000), b"end" * 1000, p)

    def test_unknown_id_is_one_outcome(self) -> None:
        dev = self.session.attach_batch(self.images(1))[0]
        results = self.session.release_batch([dev, 999999])
        self.assertTrue(results[0].ok, results[0].error)
        self.assertIsInstance(results[1].error, loopfd.UnknownDeviceError)
        self.assertIn("device id 999999", str(results[1].error))

    def test_refused_as_a_whole(self) -> None:
        dev = self.session.attach_batch(self.images(1))[0]
        for bad in ([], [dev] * 65):
            with self.assertRaises(loopfd.Error) as cm:
                self.session.release_batch(bad)
            self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaisesRegex(loopfd.Error, "given twice"):
            self.session.release_batch([dev, dev.id])
        with self.assertRaises(loopfd.BadOptionError):
            self.session.release_batch([dev], timeout=601)
        with self.assertRaisesRegex(loopfd.Error, "1 to 64 entries"):
            self.session.attach_batch([])
        # the helper's own refusals through the session: nothing released
        body = P.release_batch(0, [dev.id, dev.id], 0)[P.HEADER_SIZE:]
        with self.assertRaisesRegex(loopfd.BadOptionError, "entries 0 and 1"):
            self.session.transact_fds(P.OP_RELEASE_BATCH, body)
        self.assertEqual([d.id for d in self.session.list()], [dev.id])
        self.assertTrue(self.session.release_batch([dev])[0].ok)


class LimitTest(unittest.TestCase):
    """A batch larger than the per-user limit fails at the first entry past it."""

    def setUp(self) -> None:
        mode()
        self.dir = test_dir()

    def over_the_limit(self, batched: bool) -> None:
        with connect() as s:
            if not batched:
                one_by_one(s)
            limit = s.info.max_devices
            self.assertLess(limit, 8, "t_python.sh sets max-devices-per-user 3 for this")
            paths = [make_image(self.dir, f"img{i}", MiB) for i in range(limit + 2)]
            # A device released busy by an earlier test keeps its quota slot
            # until the helper sees it detached (once a second): retry.
            deadline = time.monotonic() + 5
            while True:
                with self.assertRaises(loopfd.QuotaUserError) as cm:
                    s.attach_batch(paths)
                if cm.exception.entry == limit or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            e = cm.exception
            self.assertIsInstance(e, loopfd.LimitError)
            self.assertEqual(e.entry, limit)
            self.assertEqual(e.errno, errno.EDQUOT)
            self.assertIn(f"entry {limit}: ", str(e))
            self.assertTrue(str(e).startswith(f"{paths[limit]}: "), str(e))
            self.assertEqual(s.held, {})
            self.assertEqual(s.list(), [])
            self.assertFalse(set(paths) & attached_images())
            # all the slots are free again: exactly the limit fits
            devs = s.attach_batch(paths[:limit])
            self.assertTrue(all(r.ok for r in s.release_batch(devs)))

    def test_batch_over_the_user_limit(self) -> None:
        self.over_the_limit(True)

    def test_batch_over_the_user_limit_one_by_one(self) -> None:
        self.over_the_limit(False)


class CliBatchTest(unittest.TestCase):
    """python3 -m loopfd run over many images, batched as the C CLI."""

    def setUp(self) -> None:
        mode()
        self.dir = test_dir()

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loopfd", "run", *args],
                              capture_output=True, text=True, timeout=120)

    def test_many_images(self) -> None:
        paths = [make_image(self.dir, f"img{i}", MiB) for i in range(IMAGES)]
        script = f"import os\nfor i in range({IMAGES}): os.write(3 + i, b'dev%d' % i)"
        r = self.run_cli("-v", *paths, "--", sys.executable, "-c", script)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.count("loopfd: released /dev/loop"), IMAGES, r.stderr)
        for i, p in enumerate(paths):
            with open(p, "rb") as f:
                self.assertEqual(f.read(8).rstrip(b"\0"), f"dev{i}".encode(), p)
        self.assertFalse(set(paths) & attached_images())

    def test_failing_image_is_named(self) -> None:
        paths = [make_image(self.dir, f"img{i}", MiB) for i in range(3)]
        paths[1] = make_image(self.dir, "empty", 0)
        r = self.run_cli(*paths, "--", "true")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"loopfd: {paths[1]}: attach: helper refused: entry 1: ", r.stderr)
        self.assertFalse(set(paths) & attached_images())


if __name__ == "__main__":
    unittest.main()
