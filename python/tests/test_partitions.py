"""The partition table reader, held against `sfdisk --json` on images sfdisk made."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import time
import unittest
import zlib

from loopfd import cli, partitions
from loopfd.partitions import PartitionError, Table, read_table, select

from common import MiB, make_image, sfdisk, test_dir

ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
GPT_SCRIPT = ("label: gpt\n"
              "size=4MiB, type=uefi, name=EFI\n"
              f"size=8MiB, type={ROOT_X86_64}, name=root\n"
              "size=2MiB, type=swap\n"
              "type=linux, name=data\n")
MBR_SCRIPT = ("label: dos\n"
              "size=4MiB, type=83, bootable\n"
              "size=4MiB, type=c\n"
              "size=20MiB, type=5\n"
              "size=2MiB, type=83\n"
              "size=3MiB, type=82\n"
              "type=83\n")


def sfdisk_json(image: str, sector_size: int) -> dict[str, object]:
    return json.loads(sfdisk(image, sector_size, "", "--json"))["partitiontable"]


class AgainstSfdisk(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = test_dir()

    def same(self, table: Table, image: str, sector_size: int) -> None:
        """Start, size, type, uuid and name of every partition as sfdisk has them."""
        theirs = sfdisk_json(image, sector_size)
        containers = {"5", "f", "85"}
        want = [(int(p["node"][len(p["node"].rstrip("0123456789")):]), p["start"],
                 p["size"], p["type"], p.get("uuid", ""), p.get("name", ""))
                for p in theirs["partitions"] if p["type"] not in containers]
        got = [(p.number, p.start, p.size, p.type, p.uuid, p.name)
               for p in table.partitions]
        self.assertEqual(got, want)
        self.assertEqual(table.label, theirs["label"])
        self.assertEqual(table.id.lower(), str(theirs["id"]).lower())
        self.assertEqual(table.sector_size, sector_size)

    def gpt(self, ss: int, name: str = "gpt", script: str = GPT_SCRIPT) -> str:
        img = make_image(self.dir, name, 64 * MiB)
        sfdisk(img, ss, script)
        return img

    def test_gpt_512_and_4k(self) -> None:
        for ss in (512, 4096):
            with self.subTest(sector_size=ss):
                img = self.gpt(ss, f"gpt{ss}")
                table = read_table(img)
                self.same(table, img, ss)
                self.assertEqual([p.type_name for p in table.partitions],
                                 ["esp", "root-x86-64", "swap", "linux-generic"])
                self.assertEqual(read_table(img, ss), table)
                self.assertFalse(table.used_backup)

    def test_gpt_128_entries_all_used(self) -> None:
        img = make_image(self.dir, "gpt128", 132 * MiB)
        script = "label: gpt\n" + "".join(f"size=2048, name=p{i}\n" for i in range(128))
        sfdisk(img, 512, script)
        table = read_table(img)
        self.assertEqual(len(table.partitions), 128)
        self.same(table, img, 512)
        self.assertEqual(select(table, "p127").number, 128)

    def test_mbr_with_logical_partitions(self) -> None:
        img = make_image(self.dir, "mbr", 64 * MiB)
        sfdisk(img, 512, MBR_SCRIPT)
        table = read_table(img)
        self.same(table, img, 512)
        # sfdisk filled slot 4 after the extended 3; the logicals are 5 and 6,
        # in an order other than the disk's
        self.assertEqual([p.number for p in table.partitions], [1, 2, 4, 5, 6])
        self.assertLess(table.partitions[3].start, table.partitions[2].start)
        self.assertEqual(table.partitions[0].attrs, 0x80)

    def test_corrupt_primary_uses_the_backup(self) -> None:
        for ss in (512, 4096):
            with self.subTest(sector_size=ss):
                img = self.gpt(ss, f"bad{ss}")
                good = read_table(img)
                with open(img, "r+b") as f:
                    f.seek(ss + 40)  # inside the primary header: its CRC fails
                    f.write(b"\xff\xff")
                table = read_table(img)
                self.assertTrue(table.used_backup)
                self.assertEqual(table.partitions, good.partitions)
                self.same(table, img, ss)  # sfdisk too reads the backup

    def test_corrupt_primary_entries_use_the_backup(self) -> None:
        img = self.gpt(512, "badentries")
        with open(img, "r+b") as f:
            f.seek(2 * 512 + 56)  # the first entry's name
            f.write(b"X\0")
        table = read_table(img)
        self.assertTrue(table.used_backup)
        self.assertEqual(select(table, "1").name, "EFI")

    def test_both_headers_bad_refused(self) -> None:
        img = self.gpt(512, "bothbad")
        size = os.path.getsize(img)
        with open(img, "r+b") as f:
            for at in (512 + 40, size - 512 + 40):
                f.seek(at)
                f.write(b"\xff\xff")
        with self.assertRaises(PartitionError) as cm:
            read_table(img)
        self.assertIn("protective MBR", str(cm.exception))

    def test_partition_past_end_of_file_refused(self) -> None:
        img = self.gpt(512, "pastend")
        os.truncate(img, 16 * MiB)  # partitions 3 and 4 now end past it
        sfdisk_json(img, 512)  # sfdisk still reads it (from the primary)
        with self.assertRaises(PartitionError) as cm:
            read_table(img)
        self.assertRegex(str(cm.exception), r"partition \d: ends at byte \d+ .*past the end")

    def edit_entry(self, img: str, index: int, first: int, last: int) -> None:
        """Rewrite entry index's first/last LBA and fix both CRCs."""
        with open(img, "r+b") as f:
            hdr = bytearray(os.pread(f.fileno(), 92, 512))
            entries_lba, count, esize = struct.unpack_from("<QII", hdr, 72)
            arr = bytearray(os.pread(f.fileno(), count * esize, entries_lba * 512))
            struct.pack_into("<QQ", arr, index * esize + 32, first, last)
            struct.pack_into("<I", hdr, 88, zlib.crc32(arr))
            struct.pack_into("<I", hdr, 16, 0)
            struct.pack_into("<I", hdr, 16, zlib.crc32(hdr))
            os.pwrite(f.fileno(), bytes(arr), entries_lba * 512)
            os.pwrite(f.fileno(), bytes(hdr), 512)

    def test_overlap_refused(self) -> None:
        img = self.gpt(512, "overlap")
        p1 = read_table(img).partitions[0]
        self.edit_entry(img, 1, p1.start + 8, p1.start + 100)
        with self.assertRaises(PartitionError) as cm:
            read_table(img)
        self.assertIn("overlap", str(cm.exception))
        self.assertIn("partition 1", str(cm.exception))

    def test_out_of_range_refused(self) -> None:
        img = self.gpt(512, "range")
        t = read_table(img)
        for first, last, words in ((20, 100, "outside the usable range"),
                                   (t.last_lba - 10, t.last_lba + 10, "usable range"),
                                   (5000, 4000, "before it starts")):
            self.edit_entry(img, 2, first, last)
            with self.assertRaises(PartitionError) as cm:
                read_table(img)
            self.assertIn(words, str(cm.exception))
            self.assertIn("partition 3", str(cm.exception))

    def test_random_corruption_never_crashes(self) -> None:
        rng = random.Random(12)
        for name, script in (("gpt", GPT_SCRIPT), ("mbr", MBR_SCRIPT)):
            img = make_image(self.dir, f"fuzz-{name}", 64 * MiB)
            sfdisk(img, 512, script)
            fd = os.open(img, os.O_RDWR)
            self.addCleanup(os.close, fd)
            # the bytes a reader looks at: MBR, GPT header and entries, EBRs, backup
            size = os.path.getsize(img)
            spans = [(0, 34 * 512), (size - 33 * 512, size)]
            spans += [(p.offset - 512 * 2048, p.offset) for p in read_table(img).partitions
                      if p.number > 4]
            start = time.monotonic()
            outcomes = {"ok": 0, "refused": 0}
            for _ in range(400):
                saved = []
                for _ in range(rng.randint(1, 8)):
                    lo, hi = rng.choice(spans)
                    at = rng.randrange(max(lo, 0), hi)
                    saved.append((at, os.pread(fd, 1, at)))
                    os.pwrite(fd, bytes([rng.randrange(256)]), at)
                try:
                    read_table(img)
                    outcomes["ok"] += 1
                except PartitionError as e:
                    self.assertTrue(str(e))
                    outcomes["refused"] += 1
                for at, byte in reversed(saved):
                    os.pwrite(fd, byte, at)
            self.assertLess(time.monotonic() - start, 60)
            self.assertGreater(outcomes["refused"], 0, name)
            self.assertGreater(outcomes["ok"], 0, name)

    def test_mbr_refusals(self) -> None:
        sector = bytearray(512)
        sector[510:512] = b"\x55\xaa"
        struct.pack_into("<B3xB3xII", sector, 446, 0x41, 0x83, 2048, 4096)
        img = make_image(self.dir, "bootcode", 4 * MiB, bytes(sector))
        with self.assertRaisesRegex(PartitionError, "slot 1 has boot flag 0x41"):
            read_table(img)
        struct.pack_into("<B", sector, 446, 0x80)
        img = make_image(self.dir, "good", 4 * MiB, bytes(sector))
        self.assertEqual(read_table(img).partitions[0].start, 2048)
        struct.pack_into("<B3xB3xII", sector, 446, 0x80, 0x06, 0, 2048)  # mkfs.vfat --mbr
        img = make_image(self.dir, "fakembr", MiB, bytes(sector))
        with self.assertRaisesRegex(PartitionError, "partition 1: starts at sector 0"):
            read_table(img)

    def test_reads_stay_inside_the_file(self) -> None:
        img = make_image(self.dir, "small", 4096)
        fd = os.open(img, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        reader = partitions._Reader(fd, img)
        self.assertEqual(len(reader.read(4000, 96)), 96)
        for offset, length in ((4000, 97), (-1, 10), (8192, 1)):
            with self.assertRaisesRegex(PartitionError, "but the file has 4096"):
                reader.read(offset, length)

    def test_not_a_table(self) -> None:
        for name, size, data in (("empty", 0, b""), ("zeros", MiB, b""),
                                 ("tiny", 100, b"x" * 100)):
            img = make_image(self.dir, name, size, data)
            with self.assertRaises(PartitionError) as cm:
                read_table(img)
            self.assertIn(img, str(cm.exception))


class Selectors(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = test_dir()
        self.img = make_image(self.dir, "gpt", 64 * MiB)
        sfdisk(self.img, 512, GPT_SCRIPT.replace("type=linux, name=data",
                                                 "size=8MiB, type=linux, name=data") +
               "type=linux, name=data2\n")
        self.table = read_table(self.img)

    def test_each_kind_of_selector(self) -> None:
        t = self.table
        self.assertEqual(select(t, "1").name, "EFI")
        self.assertEqual(select(t, "esp").number, 1)
        self.assertEqual(select(t, "root").number, 2)
        self.assertEqual(select(t, "root-x86-64").number, 2)
        self.assertEqual(select(t, ROOT_X86_64.lower()).number, 2)
        self.assertEqual(select(t, "swap").number, 3)
        self.assertEqual(select(t, "data").number, 4)

    def test_ambiguous_and_missing_list_the_table(self) -> None:
        for sel, words in (("linux-generic", "matches partitions 4, 5"),
                           ("nothing", "no partition matches 'nothing'"),
                           ("9", "no partition matches '9'")):
            with self.assertRaises(PartitionError) as cm:
                select(self.table, sel)
            self.assertIn(words, str(cm.exception))
            self.assertIn("1 esp 'EFI'", str(cm.exception))


class CommandLine(unittest.TestCase):
    """python3 -m loopfd partitions and run --partition(s), like the C CLI."""

    def setUp(self) -> None:
        self.dir = test_dir()

    def test_partitions_json_matches_sfdisk(self) -> None:
        img = make_image(self.dir, "gpt", 64 * MiB)
        sfdisk(img, 512, GPT_SCRIPT)
        ours = json.loads(subprocess.run(
            [sys.executable, "-m", "loopfd", "partitions", "--json", img],
            check=True, capture_output=True, text=True).stdout)["partitiontable"]
        theirs = sfdisk_json(img, 512)
        for key in ("label", "id", "device", "unit", "firstlba", "lastlba"):
            self.assertEqual(ours[key], theirs[key], key)
        for a, b in zip(ours["partitions"], theirs["partitions"], strict=True):
            for key in ("node", "start", "size", "type", "uuid"):
                self.assertEqual(a[key], b[key], key)
            self.assertEqual(a.get("name"), b.get("name"))
            self.assertEqual(a["offset"], a["start"] * 512)
            self.assertEqual(a["sizelimit"], a["size"] * 512)
        bad = subprocess.run([sys.executable, "-m", "loopfd", "partitions", "/nonexistent"],
                             capture_output=True, text=True)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("/nonexistent", bad.stderr)

    def test_run_with_partitions(self) -> None:
        img = make_image(self.dir, "gpt", 64 * MiB)
        sfdisk(img, 4096, GPT_SCRIPT)
        script = ('printf E >&4; printf R >&5; '
                  'echo "$LOOPFD_PART_ESP $LOOPFD_PART_ROOT $LOOPFD_PART_2 $LOOPFD_DEVICES"; '
                  'printf "%s\\n" "$LOOPFD_PARTITIONS"')
        out = subprocess.run([sys.executable, "-m", "loopfd", "run", "--partition", "esp",
                              "--partition", "root", img, "--", "sh", "-c", script],
                             check=True, capture_output=True, text=True).stdout.splitlines()
        self.assertEqual(out[0], "/dev/fd/4 /dev/fd/5 /dev/fd/5 /dev/fd/3 /dev/fd/4 /dev/fd/5")
        fields = out[1].split("\t")
        table = read_table(img)
        esp = select(table, "esp")
        self.assertEqual(fields[:2] + fields[3:], ["/dev/fd/4", "1", str(esp.offset),
                                                   str(esp.length), esp.type, "esp", "EFI"])
        with open(img, "rb") as f:
            self.assertEqual(os.pread(f.fileno(), 1, esp.offset), b"E")
            self.assertEqual(os.pread(f.fileno(), 1, select(table, "root").offset), b"R")
        bad = subprocess.run([sys.executable, "-m", "loopfd", "run", "--partition", "home", img,
                              "--", "true"], capture_output=True, text=True)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("no partition matches 'home'", bad.stderr)

    def test_usage_errors(self) -> None:
        for args in (["run", "img"], ["run", "--", "true"], ["run", "img", "--"],
                     ["run", "--offset", "12x", "img", "--", "true"],
                     ["run", "--partitions", "a", "b", "--", "true"], ["frob"]):
            r = subprocess.run([sys.executable, "-m", "loopfd", *args], capture_output=True,
                               text=True)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn("loopfd: ", r.stderr)
        self.assertEqual(cli.parse_bytes("-o", "3MiB"), 3 * MiB)
        self.assertEqual(cli.parse_seconds("-t", "0.25"), 250)


if __name__ == "__main__":
    unittest.main()
