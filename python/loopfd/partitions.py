"""A small reader of GPT and MBR partition tables, from the image file itself.

No kernel partition parser ever sees the image: the caller reads the table
here, unprivileged, and attaches each partition as an offset/sizelimit
window with the table's sector size (``Partition.offset``/``.length``).

Rules (the same as the C client's, issue 13):

* Sector size: the one given, else detected by a GPT header at LBA 1 of
  512 bytes, then of 4096 bytes; MBR without GPT: 512.
* GPT: header and entry-array CRCs checked; a bad primary header or array
  is replaced by the backup at the file's last LBA (as sfdisk and libblkid
  do), both bad is refused.  A protective MBR without any valid GPT is
  refused.
* MBR: primaries 1-4 by slot, logical partitions from 5 by walking the
  EBR chain; the extended container itself is not listed.
* Refused, with the partition and the numbers named: an entry that ends
  before it starts, lies outside the GPT's usable range (or starts at
  sector 0 in an MBR), overlaps another, or ends past the end of the file.

Every malformed input ends in PartitionError, never in another exception.
"""

from __future__ import annotations

import os
import platform
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import IO, Union

Image = Union[int, str, "os.PathLike[str]", IO[bytes]]

GPT_SIGNATURE = b"EFI PART"
MBR_EXTENDED = (0x05, 0x0F, 0x85)
MBR_PROTECTIVE = 0xEE
MAX_GPT_ENTRIES_BYTES = 1 << 20  # 8192 entries of 128 bytes; sgdisk's max is 128 KiB
MAX_LOGICALS = 128

# Discoverable Partitions Specification type names.
_DPS_PLAIN = {
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "xbootldr": "BC13C2FF-59E6-4262-A352-B275FD6F7172",
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
    "home": "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
    "srv": "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
    "var": "4D21B016-B534-45C2-A9FB-5C16E091FD2D",
    "tmp": "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1",
    "linux-generic": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
}
_DPS_ROOT = {
    "x86": "44479540-F297-41B2-9AF7-D131D5F0458A",
    "x86-64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "arm": "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
    "arm64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
    "ia64": "993D8D3D-F80E-4225-855A-9DAF8ED7EA97",
    "loongarch64": "77055800-792C-4F94-B39A-98C91B762BB6",
    "ppc": "1DE3F1EF-FA98-47B5-8DCD-4A860A654D78",
    "ppc64": "912ADE1D-A839-4913-8964-A10EEE08FBD2",
    "ppc64-le": "C31C45E6-3F39-412E-80FB-4809C4980599",
    "riscv32": "60D5A7FE-8E7D-435C-B714-3DD8162144E1",
    "riscv64": "72EC70A6-CF74-40E6-BD49-4BDA08E8F224",
    "s390": "08A7ACEA-624C-4A20-91E8-6E0FA67D23F9",
    "s390x": "5EEAD9A9-FE09-4A1E-A1D7-520D00531306",
}
_DPS_USR = {
    "x86": "75250D76-8CC6-458E-BD66-BD47CC81A812",
    "x86-64": "8484680C-9521-48C6-9C11-B0720656F69E",
    "arm": "7D0359A3-02B3-4F0A-865C-654403E70625",
    "arm64": "B0E01050-EE5F-4390-949A-9101B17104E9",
    "riscv32": "B933FB22-5C3F-4F91-AF90-E2BB0FA50702",
    "riscv64": "BEAEC34B-8442-439B-A40B-984381ED097D",
}
TYPE_NAMES: dict[str, str] = {guid: name for name, guid in _DPS_PLAIN.items()}
TYPE_NAMES.update({guid: f"root-{arch}" for arch, guid in _DPS_ROOT.items()})
TYPE_NAMES.update({guid: f"usr-{arch}" for arch, guid in _DPS_USR.items()})

_MACHINE_ARCH = {"x86_64": "x86-64", "i686": "x86", "i386": "x86", "aarch64": "arm64",
                 "armv7l": "arm", "riscv64": "riscv64", "s390x": "s390x",
                 "ppc64le": "ppc64-le", "ppc64": "ppc64", "loongarch64": "loongarch64"}


def native_arch() -> str:
    """This machine's DPS architecture suffix (x86-64, arm64, ...)."""
    return _MACHINE_ARCH.get(platform.machine(), platform.machine())


class PartitionError(ValueError):
    """A partition table that cannot be read or is refused; says which and why."""


@dataclass(frozen=True)
class Partition:
    """One partition, in sectors of the table's sector size (as sfdisk --json)."""

    number: int  # GPT entry index + 1; MBR slot 1-4, logicals from 5
    start: int  # first sector
    size: int  # sectors
    type: str  # GPT type GUID (upper case) or MBR type in hex ("83")
    uuid: str = ""  # GPT partition GUID (upper case); "" for MBR
    name: str = ""  # GPT partition name (label); "" for MBR
    attrs: int = 0  # GPT attribute bits; MBR: 0x80 for the bootable flag
    sector_size: int = 512
    type_name: str = ""  # DPS name (esp, root-x86-64, ...) or ""

    @property
    def offset(self) -> int:
        """Bytes into the image: attach(offset=...)."""
        return self.start * self.sector_size

    @property
    def length(self) -> int:
        """Bytes: attach(sizelimit=...)."""
        return self.size * self.sector_size

    def describe(self) -> str:
        """One line for messages and listings."""
        label = f" '{self.name}'" if self.name else ""
        kind = self.type_name or self.type
        return f"{self.number} {kind}{label} (sectors {self.start}+{self.size})"


@dataclass(frozen=True)
class Table:
    """A partition table: label "gpt" or "dos", as sfdisk names them."""

    label: str
    id: str  # GPT disk GUID, or the MBR disk signature as 0x%08x
    sector_size: int
    partitions: list[Partition] = field(default_factory=list)
    first_lba: int = 0  # GPT usable range; 0 for MBR
    last_lba: int = 0
    used_backup: bool = False  # GPT: the primary was bad, the backup was read


class _Reader:
    """pread with bounds: short reads and errors become PartitionError."""

    def __init__(self, fd: int, what: str) -> None:
        self.fd = fd
        self.what = what
        try:
            self.size = os.fstat(fd).st_size
        except OSError as e:
            raise PartitionError(f"{what}: {e.strerror}") from e

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise PartitionError(f"{self.what}: the table needs bytes {offset}..."
                                 f"{offset + length} but the file has {self.size}")
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as e:
            raise PartitionError(f"{self.what}: reading: {e.strerror}") from e
        if len(data) != length:
            raise PartitionError(f"{self.what}: short read at byte {offset}")
        return data


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw)).upper()


def _crc_ok(data: bytes, crc_at: int, crc: int) -> bool:
    zeroed = data[:crc_at] + b"\0\0\0\0" + data[crc_at + 4:]
    return zlib.crc32(zeroed) & 0xFFFFFFFF == crc


@dataclass(frozen=True)
class _GptHeader:
    my_lba: int
    first_usable: int
    last_usable: int
    disk_guid: str
    entries_lba: int
    count: int
    entry_size: int
    entries_crc: int


_GPT_HEAD = struct.Struct("<8sIIIIQQQQ16sQIII")


def _gpt_header(r: _Reader, lba: int, ss: int) -> _GptHeader | str:
    """The GPT header at lba, or why it is not a valid one."""
    if (lba + 1) * ss > r.size or lba < 1:
        return f"no sector {lba}"
    raw = r.read(lba * ss, ss)
    (sig, _rev, hsize, hcrc, _res, my_lba, _alt, first, last, disk, entries_lba,
     count, esize, ecrc) = _GPT_HEAD.unpack_from(raw)
    if sig != GPT_SIGNATURE:
        return f"no GPT signature at sector {lba}"
    if hsize < 92 or hsize > ss or not _crc_ok(raw[:hsize], 16, hcrc):
        return f"GPT header at sector {lba}: bad size or CRC"
    if my_lba != lba:
        return f"GPT header at sector {lba} says it is at sector {my_lba}"
    if esize < 128 or esize % 8 or count * esize > MAX_GPT_ENTRIES_BYTES:
        return f"GPT header at sector {lba}: {count} entries of {esize} bytes"
    if first > last:
        return f"GPT header at sector {lba}: usable sectors {first}..{last}"
    return _GptHeader(my_lba, first, last, _guid(disk), entries_lba, count, esize, ecrc)


def _gpt_entries(r: _Reader, h: _GptHeader, ss: int) -> bytes | str:
    length = h.count * h.entry_size
    if h.entries_lba < 1 or (h.entries_lba * ss + length) > r.size:
        return f"GPT entries at sector {h.entries_lba} lie outside the file"
    raw = r.read(h.entries_lba * ss, length)
    if zlib.crc32(raw) & 0xFFFFFFFF != h.entries_crc:
        return f"GPT entries at sector {h.entries_lba}: bad CRC"
    return raw


def _gpt_partitions(h: _GptHeader, raw: bytes, ss: int) -> list[Partition]:
    parts = []
    for i in range(h.count):
        e = raw[i * h.entry_size:i * h.entry_size + 128]
        if e[:16] == b"\0" * 16:
            continue
        first, last, attrs = struct.unpack_from("<QQQ", e, 32)
        name = e[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        kind = _guid(e[:16])
        n = i + 1
        if last < first:
            raise PartitionError(f"partition {n}: ends at sector {last} before it "
                                 f"starts at {first}")
        if first < h.first_usable or last > h.last_usable:
            raise PartitionError(f"partition {n}: sectors {first}..{last} lie outside "
                                 f"the usable range {h.first_usable}..{h.last_usable}")
        parts.append(Partition(n, first, last - first + 1, kind, _guid(e[16:32]), name,
                               attrs, ss, TYPE_NAMES.get(kind, "")))
    return parts


def _read_gpt(r: _Reader, ss: int) -> Table | str:
    """The GPT with sector size ss (the backup if the primary is bad), or why not."""
    why = ""
    backup_lba = r.size // ss - 1
    for lba in (1, backup_lba):
        h = _gpt_header(r, lba, ss)
        if isinstance(h, str):
            why = why or h
            continue
        raw = _gpt_entries(r, h, ss)
        if isinstance(raw, str):
            why = why or raw
            continue
        parts = _gpt_partitions(h, raw, ss)
        return Table("gpt", h.disk_guid, ss, parts, h.first_usable, h.last_usable,
                     used_backup=lba != 1)
    return why


def _mbr_entries(sector: bytes, what: str) -> list[tuple[int, int, int, int]]:
    """(status, type, start, size) of the four slots of an MBR or EBR."""
    if sector[510:512] != b"\x55\xaa":
        raise PartitionError(f"{what}: no 0x55AA signature")
    out = []
    for slot in range(4):
        status, kind, start, size = struct.unpack_from("<B3xB3xII", sector, 446 + 16 * slot)
        if status not in (0x00, 0x80):
            raise PartitionError(f"{what}: slot {slot + 1} has boot flag {status:#04x}, "
                                 "so this is no partition table")
        out.append((status, kind, start, size))
    return out


def _logicals(r: _Reader, ext_start: int, ext_size: int, ss: int) -> list[Partition]:
    """Walk the EBR chain of the extended partition at ext_start."""
    parts, seen, ebr = [], set(), ext_start
    while True:
        if ebr in seen or len(parts) >= MAX_LOGICALS:
            raise PartitionError(f"extended partition: the EBR chain loops or has more "
                                 f"than {MAX_LOGICALS} entries (at sector {ebr})")
        seen.add(ebr)
        slots = _mbr_entries(r.read(ebr * ss, ss), f"EBR at sector {ebr}")
        status, kind, start, size = slots[0]
        n = 5 + len(parts)
        if kind != 0 and size != 0:
            first = ebr + start
            if start == 0 or first + size > ext_start + ext_size:
                raise PartitionError(f"partition {n}: sectors {first}+{size} lie outside "
                                     f"its extended partition {ext_start}+{ext_size}")
            parts.append(Partition(n, first, size, f"{kind:x}", attrs=status,
                                   sector_size=ss))
        _, next_kind, next_rel, _ = slots[1]
        if next_kind not in MBR_EXTENDED or next_rel == 0:
            return parts
        ebr = ext_start + next_rel
        if ebr >= ext_start + ext_size:
            raise PartitionError(f"EBR at sector {ebr} lies outside its extended "
                                 f"partition {ext_start}+{ext_size}")


def _read_mbr(r: _Reader, ss: int) -> Table:
    if r.size < 512:
        raise PartitionError(f"{r.what}: {r.size} bytes, too small for a partition table")
    sector = r.read(0, 512)
    slots = _mbr_entries(sector, f"{r.what}: MBR")
    if any(kind == MBR_PROTECTIVE for _, kind, _, _ in slots):
        raise PartitionError(f"{r.what}: a protective MBR (GPT disk) but no valid GPT "
                             "header, primary or backup")
    parts: list[Partition] = []
    containers = []
    for slot, (status, kind, start, size) in enumerate(slots, 1):
        if kind == 0 or size == 0:
            continue
        if start == 0:
            raise PartitionError(f"partition {slot}: starts at sector 0, over the MBR")
        if kind in MBR_EXTENDED:
            containers.append((slot, start, size))
            parts.extend(_logicals(r, start, size, ss))
        else:
            parts.append(Partition(slot, start, size, f"{kind:x}", attrs=status,
                                   sector_size=ss))
    disk_id = struct.unpack_from("<I", sector, 440)[0]
    parts.sort(key=lambda p: p.number)
    for slot, start, size in containers:
        for p in parts:
            if p.number <= 4 and p.start < start + size and start < p.start + p.size:
                raise PartitionError(f"partition {p.number}: sectors {p.start}+{p.size} "
                                     f"overlap extended partition {slot} ({start}+{size})")
    return Table("dos", f"0x{disk_id:08x}", ss, parts)


def _check_layout(table: Table, r: _Reader) -> None:
    """Refuse overlapping partitions and partitions past the end of the file."""
    ordered = sorted(table.partitions, key=lambda p: p.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.start + a.size:
            raise PartitionError(f"partition {a.number} (sectors {a.start}+{a.size}) and "
                                 f"partition {b.number} (sectors {b.start}+{b.size}) overlap")
    for p in table.partitions:
        if p.offset + p.length > r.size:
            raise PartitionError(f"partition {p.number}: ends at byte {p.offset + p.length}"
                                 f" (sector {p.start + p.size}), past the end of "
                                 f"{r.what} ({r.size} bytes)")


def _detect(r: _Reader, sector_size: int | None) -> Table:
    sizes = [sector_size] if sector_size else [512, 4096]
    why = []
    for ss in sizes:
        found = _read_gpt(r, ss)
        if isinstance(found, Table):
            return found
        why.append(f"{ss}-byte sectors: {found}")
    try:
        return _read_mbr(r, sector_size or 512)
    except PartitionError as e:
        raise PartitionError(f"{r.what}: no usable partition table (GPT with "
                             f"{'; '.join(why)}; MBR: {e})") from None


def read_table(image: Image, sector_size: int | None = None) -> Table:
    """Read the partition table of image (a path, an fd or an open file).

    sector_size: the logical sector size to read it with (512, 4096, ...);
    None detects it.  Raises PartitionError naming the partition and the
    numbers when the table is unusable or refused.
    """
    if sector_size is not None and (sector_size < 512 or sector_size & (sector_size - 1)):
        raise PartitionError(f"sector size {sector_size}: not a power of two >= 512")
    if isinstance(image, (str, os.PathLike)):
        what = os.fsdecode(image)
        try:
            fd = os.open(what, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            raise PartitionError(f"{what}: {e.strerror}") from e
        try:
            return _read_fd(fd, what, sector_size)
        finally:
            os.close(fd)
    fd = image if isinstance(image, int) else image.fileno()
    name = getattr(image, "name", None)
    return _read_fd(fd, str(name) if name else f"fd {fd}", sector_size)


def _read_fd(fd: int, what: str, sector_size: int | None) -> Table:
    r = _Reader(fd, what)
    table = _detect(r, sector_size)
    try:
        _check_layout(table, r)
    except PartitionError as e:
        raise PartitionError(f"{what}: {e}") from None
    return table


def read_partitions(image: Image, sector_size: int | None = None) -> list[Partition]:
    """The partitions of image, in table order (read_table(...).partitions)."""
    return read_table(image, sector_size).partitions


def _matches_type_name(p: Partition, sel: str) -> bool:
    if not p.type_name:
        return False
    if sel in ("root", "usr"):  # any architecture's; ambiguity is reported
        return p.type_name.startswith(sel + "-")
    return p.type_name == sel


def select(table: Table, selector: str) -> Partition:
    """The one partition selector names: a number, a type GUID, a DPS type name
    (esp, root, root-x86-64, ...) or a GPT partition name.  An ambiguous or
    unmatched selector raises PartitionError listing what the table holds.
    """
    parts = table.partitions
    if selector.isdigit():
        found = [p for p in parts if p.number == int(selector)]
    elif len(selector) == 36 and selector.count("-") == 4:
        found = [p for p in parts if p.type == selector.upper()]
    else:
        found = [p for p in parts if _matches_type_name(p, selector) or p.name == selector]
    if len(found) == 1:
        return found[0]
    held = "; ".join(p.describe() for p in parts) or "no partitions"
    if not found:
        raise PartitionError(f"no partition matches '{selector}'; the table holds: {held}")
    raise PartitionError(f"'{selector}' matches partitions "
                         f"{', '.join(str(p.number) for p in found)}; the table holds: "
                         f"{held}")
