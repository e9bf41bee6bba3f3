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
ROOT_VERITY_X86_64 = "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"
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
        """Every partition's number, start, size, type, uuid, name and bootable
        flag as sfdisk --json has them (extended containers included)."""
        theirs = sfdisk_json(image, sector_size)
        gpt = theirs["label"] == "gpt"
        want = [(int(p["node"][len(p["node"].rstrip("0123456789")):]), p["start"],
                 p["size"], p["type"], p.get("uuid", "") if gpt else "", p.get("name", ""),
                 p.get("bootable", False)) for p in theirs.get("partitions", [])]
        got = [(p.number, p.start, p.size, p.type, p.uuid if gpt else "", p.name,
                p.bootable) for p in table.partitions]
        self.assertEqual(got, want)
        self.assertEqual(table.label, theirs["label"])
        self.assertEqual(table.id, theirs["id"])
        self.assertEqual(table.sector_size, sector_size)

    def gpt(self, ss: int, name: str = "gpt", script: str = GPT_SCRIPT) -> str:
        img = make_image(self.dir, name, 64 * MiB)
        sfdisk(img, ss, script)
        return img

    def refused(self, img: str, pattern: str, sector_size: int | None = None) -> str:
        with self.assertRaises(PartitionError) as cm:
            read_table(img, sector_size)
        msg = str(cm.exception)
        self.assertTrue(msg.startswith(img + ": "), msg)
        self.assertRegex(msg, pattern)
        return msg

    def test_gpt_512_and_4k(self) -> None:
        for ss in (512, 4096):
            with self.subTest(sector_size=ss):
                img = self.gpt(ss, f"gpt{ss}")
                table = read_table(img)
                self.same(table, img, ss)
                self.assertEqual([p.type_name for p in table.partitions],
                                 ["esp", "root-x86-64", "swap", "linux-generic"])
                self.assertEqual(read_table(img, ss), table)
                other = 4096 if ss == 512 else 512
                self.refused(img, f"no partition table found .*a GPT header sits at "
                                  f"byte {ss}: {ss}-byte sectors\\?", other)

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
        # sfdisk filled slot 4 after the extended 3; the logicals are 5 and 6
        self.assertEqual([(p.number, p.extended) for p in table.partitions],
                         [(1, False), (2, False), (3, True), (4, False), (5, False),
                          (6, False)])
        self.assertTrue(table.partitions[0].bootable)
        self.assertEqual(table.partitions[4].uuid, f"{table.id[2:]}-05")
        self.assertEqual(table.partitions[4].type_name, "swap")

    def test_mbr_many_logicals_and_a_stray_boot_byte(self) -> None:
        img = make_image(self.dir, "mbr13", 64 * MiB)
        sfdisk(img, 512, "label: dos\nsize=2MiB\nsize=2MiB\ntype=5\n" +
               "size=1MiB\n" * 9)
        table = read_table(img)
        self.assertEqual([p.number for p in table.partitions], [1, 2, 3, *range(5, 14)])
        self.assertEqual(select(table, "10").uuid, f"{table.id[2:]}-0a")
        # an EBR's boot indicator with bit 7 set but not 0x80: not bootable
        ebr = select(table, "7").start - 2048
        with open(img, "r+b") as f:
            os.pwrite(f.fileno(), b"\xb7", ebr * 512 + 446)
        table = read_table(img)
        self.assertFalse(select(table, "7").bootable)
        self.same(table, img, 512)

    def test_hybrid_mbr_reads_as_the_gpt(self) -> None:
        img = self.gpt(512, "hybrid")
        subprocess.run(["sgdisk", "-h", "1", img], check=True, capture_output=True)
        self.assertEqual(read_table(img).label, "gpt")
        self.same(read_table(img), img, 512)

    def test_corrupt_primary_refused_although_the_backup_is_good(self) -> None:
        for ss in (512, 4096):
            with self.subTest(sector_size=ss):
                img = self.gpt(ss, f"bad{ss}")
                with open(img, "r+b") as f:
                    f.seek(ss + 40)  # inside the primary header: its CRC fails
                    f.write(b"\xff\xff")
                self.refused(img, rf"the primary GPT header \(LBA 1, byte {ss}\) is "
                                  rf"invalid; only the backup at byte {64 * MiB - ss} is "
                                  "good: repair")
        img = self.gpt(512, "badentries")
        with open(img, "r+b") as f:
            f.seek(2 * 512 + 56)  # the first entry's name: the array's CRC fails
            f.write(b"X\0")
        self.refused(img, "primary GPT header .* is invalid; only the backup")
        # the repair the message names works
        dump = subprocess.run(["sfdisk", "-d", img], check=True, capture_output=True,
                              text=True).stdout
        subprocess.run(["sfdisk", "-q", "--no-reread", img], input=dump, text=True,
                       check=True, capture_output=True)
        self.assertEqual(select(read_table(img), "1").name, "EFI")

    def test_both_headers_bad_refused(self) -> None:
        img = self.gpt(512, "bothbad")
        size = os.path.getsize(img)
        with open(img, "r+b") as f:
            for at in (512 + 40, size - 512 + 40):
                f.seek(at)
                f.write(b"\xff\xff")
        self.refused(img, r"the GPT header at byte 512 \(512-byte sectors\) is invalid "
                          r"\(bad checksum or fields\) and no valid backup")

    def test_truncated_gpt_refused(self) -> None:
        img = self.gpt(512, "truncated")
        os.truncate(img, 16 * MiB)
        self.refused(img, r"the GPT lies past the end of the file: its header \(byte "
                          r"512\) puts the backup header at LBA 131071 .* the file has "
                          r"32768 sectors of 512 bytes")

    def test_partition_past_end_of_file_refused(self) -> None:
        img = make_image(self.dir, "mbrpastend", 64 * MiB)
        sfdisk(img, 512, MBR_SCRIPT)
        os.truncate(img, 16 * MiB)
        self.refused(img, r"partition 3 \(sectors 18432\.\.59391, bytes "
                          r"9437184\.\.30408703\) ends past the end of the file "
                          r"\(16777216 bytes, 32768 sectors of 512\)")

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
        self.refused(img, rf"partitions 1 \(sectors {p1.start}\.\.{p1.start + p1.size - 1}"
                          rf"\) and 2 \(sectors {p1.start + 8}\.\.{p1.start + 100}\) "
                          "overlap")

    def test_out_of_range_refused(self) -> None:
        img = self.gpt(512, "range")
        t = read_table(img)
        for first, last in ((20, 100), (t.last_lba - 10, t.last_lba + 10), (5000, 4000)):
            self.edit_entry(img, 2, first, last)
            self.refused(img, rf"partition 3 \(LBA {first}\.\.{last}\) lies outside the "
                              rf"GPT's usable LBAs {t.first_lba}\.\.{t.last_lba}")

    def test_sector_size_not_guessed_from_two_headers(self) -> None:
        img = self.gpt(512, "twoheaders")
        with open(img, "r+b") as f:
            os.pwrite(f.fileno(), b"EFI PART", 4096)  # inside the 512-byte entry array
        self.refused(img, "GPT headers at byte 512 and at byte 4096: give the sector size")

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
            spans += [(p.start_bytes - 512 * 2048, p.start_bytes)
                      for p in read_table(img).partitions if p.number > 4]
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
        self.refused(img, "no partition table found .*MBR slot 1 has boot indicator 0x41")
        struct.pack_into("<B", sector, 446, 0x80)
        img = make_image(self.dir, "good", 4 * MiB, bytes(sector))
        self.assertEqual(read_table(img).partitions[0].start, 2048)
        struct.pack_into("<B3xB3xII", sector, 446, 0x80, 0x06, 0, 2048)  # mkfs.vfat --mbr
        img = make_image(self.dir, "fakembr", 4 * MiB, bytes(sector))
        self.refused(img, "partition 1 starts at sector 0, over the partition table")
        struct.pack_into("<B3xB3xII", sector, 446, 0x00, 0xEE, 1, 8191)
        img = make_image(self.dir, "pmbr", 4 * MiB, bytes(sector))
        self.refused(img, r"no partition table found \(GPT or MBR, 512-byte sectors\)$")

    def test_reads_stay_inside_the_file(self) -> None:
        img = make_image(self.dir, "small", 4096)
        fd = os.open(img, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        reader = partitions._Reader(fd)
        self.assertEqual(len(reader.read(4000, 96)), 96)
        for offset, length in ((4000, 97), (-1, 10), (8192, 1)):
            with self.assertRaisesRegex(PartitionError, "but the file has 4096"):
                reader.read(offset, length)

    def test_not_a_table(self) -> None:
        for name, size, data in (("empty", 0, b""), ("zeros", MiB, b""),
                                 ("tiny", 100, b"x" * 100)):
            img = make_image(self.dir, name, size, data)
            self.refused(img, "no partition table found")


class AgainstTheCClient(unittest.TestCase):
    """The same answers as `loopfd partitions --json` (libblkid and its checks)
    on tests/partition_images.sh's shared recipes and on random corruptions:
    the same JSON, or the same refusal, word for word."""

    RECIPES = ("gpt512", "gpt512_esp_root 64", "mbr_logical", "gpt128", "gpt_hybrid",
               "gpt_bad_primary", "gpt_past_end", "mbr_past_end", "mbr_overlap",
               "mbr_ebr_loop", "gpt_overlap", "gpt_out_of_range")

    def setUp(self) -> None:
        self.dir = test_dir()
        self.c_cli = os.environ.get("LOOPFD_C_CLI", "")
        self.recipes = os.environ.get("LOOPFD_PT_IMAGES", "")
        if not self.c_cli or not self.recipes:
            self.skipTest("LOOPFD_C_CLI and LOOPFD_PT_IMAGES not set (t_python.sh)")

    def recipe(self, name: str, *args: str) -> str:
        img = os.path.join(self.dir, name.split()[0] + ".img")
        subprocess.run(["bash", "-c", f'. "$0"; img_{name} "$1" "${{@:2}}"',
                        self.recipes, img, *args], check=True, capture_output=True)
        return img

    def c_answer(self, img: str, *opts: str) -> tuple[int, object]:
        r = subprocess.run([self.c_cli, "partitions", "--json", *opts, img],
                           capture_output=True, text=True)
        return r.returncode, json.loads(r.stdout) if r.returncode == 0 else r.stderr

    # The C command's status for a table it refuses: 125, "failed before
    # anything ran" (the Python CLI keeps its own 1).
    C_REFUSED = 125

    def py_answer(self, img: str, sector_size: int | None = None) -> tuple[int, object]:
        try:
            return 0, cli.table_json(read_table(img, sector_size), img)
        except PartitionError as e:
            return self.C_REFUSED, f"loopfd: {e}\n"

    def test_shared_recipes(self) -> None:
        for recipe in self.RECIPES:
            with self.subTest(recipe=recipe):
                name, *args = recipe.split()
                img = self.recipe(name, *args)
                self.assertEqual(self.py_answer(img), self.c_answer(img))
        img = self.recipe("gpt4k", "80", self.c_cli, "run", "-b", "4096", "--grant")
        self.assertEqual(self.py_answer(img), self.c_answer(img))
        self.assertEqual(self.py_answer(img)[1]["partitiontable"]["sectorsize"], 4096)
        self.assertEqual(self.py_answer(img, 512), self.c_answer(img, "-b", "512"))

    def test_random_corruption_same_answers(self) -> None:
        rng = random.Random(7)
        for name in ("gpt512", "mbr_logical"):
            img = self.recipe(name)
            fd = os.open(img, os.O_RDWR)
            self.addCleanup(os.close, fd)
            size = os.path.getsize(img)
            spans = [(0, 34 * 512), (size - 33 * 512, size)]
            spans += [(p.start_bytes - 2048 * 512, p.start_bytes)
                      for p in read_table(img).partitions if p.number > 4]
            for _ in range(150):
                saved = []
                for _ in range(rng.randint(1, 4)):
                    lo, hi = rng.choice(spans)
                    at = rng.randrange(lo, hi)
                    saved.append((at, os.pread(fd, 1, at)))
                    os.pwrite(fd, bytes([rng.randrange(256)]), at)
                self.assertEqual(self.py_answer(img), self.c_answer(img),
                                 f"{name} with bytes {[a for a, _ in saved]} changed")
                for at, byte in reversed(saved):
                    os.pwrite(fd, byte, at)


class Selectors(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = test_dir()
        self.img = make_image(self.dir, "gpt", 64 * MiB)
        sfdisk(self.img, 512, GPT_SCRIPT.replace("type=linux, name=data",
                                                 "size=8MiB, type=linux, name=data") +
               f"size=4MiB, type={ROOT_VERITY_X86_64}\n"
               "type=linux, name=data2\n")
        self.table = read_table(self.img)

    def test_each_kind_of_selector(self) -> None:
        t = self.table
        self.assertEqual(select(t, "1").name, "EFI")
        self.assertEqual(select(t, "esp").number, 1)
        self.assertEqual(select(t, "root").number, 2)  # never the verity partition
        self.assertEqual(select(t, "root-x86-64").number, 2)
        self.assertEqual(select(t, "root-verity").number, 5)
        self.assertEqual(select(t, ROOT_X86_64.lower()).number, 2)
        self.assertEqual(select(t, "swap").number, 3)
        self.assertEqual(select(t, "data").number, 4)

    def test_mbr_type_selectors(self) -> None:
        img = make_image(self.dir, "mbr", 64 * MiB)
        sfdisk(img, 512, MBR_SCRIPT)
        t = read_table(img)
        self.assertEqual(select(t, "0xc").number, 2)
        self.assertEqual(select(t, "0x82").number, 5)
        self.assertEqual(select(t, "swap").number, 5)
        with self.assertRaisesRegex(PartitionError, "'0x83' is ambiguous: 3 partitions"):
            select(t, "0x83")

    def test_ambiguous_and_missing_list_the_table(self) -> None:
        for sel, words in (
                ("linux-generic", "partition 'linux-generic' is ambiguous: 2 partitions "
                                  "match: 4 linux-generic 'data', 6 linux-generic 'data2' "
                                  "(select one by number)"),
                ("nothing", "no partition matches 'nothing' (a number, type name, type "
                            "GUID or GPT name); the gpt table holds: 1 esp 'EFI', 2 "
                            "root-x86-64 'root', 3 swap, "),
                ("9", "no partition matches '9'")):
            with self.assertRaises(PartitionError) as cm:
                select(self.table, sel)
            self.assertIn(words, str(cm.exception))


class CommandLine(unittest.TestCase):
    """python3 -m loopfd partitions and run --partition(s), like the C CLI."""

    def setUp(self) -> None:
        self.dir = test_dir()

    def test_partitions_json_matches_sfdisk(self) -> None:
        for label, script in (("gpt", GPT_SCRIPT), ("dos", MBR_SCRIPT)):
            img = make_image(self.dir, label, 64 * MiB)
            sfdisk(img, 512, script)
            ours = json.loads(subprocess.run(
                [sys.executable, "-m", "loopfd", "partitions", "--json", img],
                check=True, capture_output=True, text=True).stdout)["partitiontable"]
            theirs = sfdisk_json(img, 512)
            for key in ("label", "id", "device", "unit", "sectorsize"):
                self.assertEqual(ours[key], theirs[key], key)
            for a, b in zip(ours["partitions"], theirs["partitions"], strict=True):
                self.assertEqual(a["number"], int(b["node"][len(img):]))
                for key in ("start", "size", "type", "uuid", "name", "bootable"):
                    self.assertEqual(a.get(key), b.get(key), key)
                self.assertEqual((a["start_bytes"], a["size_bytes"]),
                                 (a["start"] * 512, a["size"] * 512))
                self.assertEqual(a.get("extended", False), b["type"] == "5")
        bad = subprocess.run([sys.executable, "-m", "loopfd", "partitions", "/nonexistent"],
                             capture_output=True, text=True)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("/nonexistent", bad.stderr)

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loopfd", "run", *args],
                              capture_output=True, text=True)

    def test_run_with_selected_partitions(self) -> None:
        img = make_image(self.dir, "gpt", 64 * MiB)
        sfdisk(img, 4096, GPT_SCRIPT)
        table = read_table(img)
        esp, root = select(table, "esp"), select(table, "root")
        script = ('printf E >&3; printf R >&4; echo "$LOOPFD_PART_ESP $LOOPFD_PART_ROOT '
                  '$LOOPFD_PART_ROOT_X86_64 $LOOPFD_PART_2 $LOOPFD_DEVICES"; '
                  'echo "$LOOPFD_PART_1_NAME $LOOPFD_PART_1_START $LOOPFD_PART_1_SIZE '
                  '$LOOPFD_PART_2_TYPE $LOOPFD_PART_2_TYPE_NAME $LOOPFD_PART_2_UUID '
                  '$LOOPFD_SECTOR_SIZE"; echo "$LOOPFD_PARTITIONS"; '
                  'echo "$LOOPFD_PART_1_DEVICE $LOOPFD_NAMES"')
        r = self.run_cli("--partition", "esp", "--partition", "root", img, "--",
                         "sh", "-c", script)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.splitlines()
        self.assertEqual(out[0], "/dev/fd/3 /dev/fd/4 /dev/fd/4 /dev/fd/4 /dev/fd/3 /dev/fd/4")
        self.assertEqual(out[1], f"EFI {esp.start_bytes} {esp.size_bytes} {root.type} "
                                 f"root-x86-64 {root.uuid} 4096")
        part1_device, *names = out[3].split()
        self.assertEqual(part1_device, names[0])
        self.assertEqual(out[2], f"1:/dev/fd/3:{names[0]}:{esp.start_bytes}:"
                                 f"{esp.size_bytes}:esp 2:/dev/fd/4:{names[1]}:"
                                 f"{root.start_bytes}:{root.size_bytes}:root-x86-64")
        with open(img, "rb") as f:
            self.assertEqual(os.pread(f.fileno(), 1, esp.start_bytes), b"E")
            self.assertEqual(os.pread(f.fileno(), 1, root.start_bytes), b"R")
        bad = self.run_cli("--partition", "home", img, "--", "true")
        self.assertEqual(bad.returncode, 1)
        self.assertIn(f"loopfd: {img}: no partition matches 'home'", bad.stderr)
        bad = self.run_cli("--partition", "1", "--partition", "esp", img, "--", "true")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("--partition esp: partition 1 is selected twice", bad.stderr)

    def test_run_with_all_partitions(self) -> None:
        img = make_image(self.dir, "mbr", 64 * MiB)
        sfdisk(img, 512, MBR_SCRIPT)
        r = self.run_cli("--partitions", img, "--", "sh", "-c",
                         'echo "$LOOPFD_DEVICES"; echo "$LOOPFD_PARTITIONS"; '
                         'echo "$LOOPFD_PART_SWAP $LOOPFD_PART_5 $LOOPFD_PART_3'
                         '${LOOPFD_PART_LINUX_GENERIC-unset}"; '
                         'blockdev --getsize64 /dev/fd/3 2>/dev/null || true')
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.splitlines()
        # fd 3 the disk, then 1, 2, 4, 5, 6: the extended container is not attached
        self.assertEqual(out[0], " ".join(f"/dev/fd/{k}" for k in range(3, 9)))
        self.assertEqual([w.split(":")[0] for w in out[1].split()], ["1", "2", "4", "5", "6"])
        # three linux-generic partitions: no LOOPFD_PART_LINUX_GENERIC
        self.assertEqual(out[2], "/dev/fd/7 /dev/fd/7 unset")

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
