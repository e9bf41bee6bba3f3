"""A small reader of GPT and MBR partition tables, from the image file itself.

No kernel partition parser ever sees the image: the caller reads the table
here, unprivileged, and attaches each partition as an offset/sizelimit
window with the table's sector size (``Partition.start_bytes`` and
``.size_bytes``; ``Session.attach_partition``).

The rules are the C client's (client/partitions.c, libblkid plus its
checks), and both are held against ``sfdisk --json``:

* Sector size: the one given; else 4096 if a GPT signature sits at byte
  4096, else 512.  Signatures at both 512 and 4096 are refused (a crafted
  or damaged image: give the sector size).
* GPT: header CRC, its own LBA, the entry array's CRC.  A bad primary
  header or array is refused even when the backup is good (libblkid would
  silently take the backup): repair the image first.  A header whose
  backup or last usable LBA lies past the end of the file (a truncated
  image) is refused.  A protective MBR without a GPT is no table.
* MBR: every primary slot's boot indicator must be 0x00 or 0x80 (else it
  is no MBR, e.g. a FAT boot sector); logical partitions from 5 by walking
  the EBR chain; the extended container is listed (``extended``) but is
  never attached.
* Refused, naming the partition and the numbers: an entry that ends before
  it starts or lies outside the GPT's usable LBAs, one that starts at
  sector 0, overlapping partitions (logicals inside their container
  excepted), partitions past the end of the file.

Every malformed input ends in PartitionError, never in another exception.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import IO, Union

from .dps import MBR_TYPES, gpt_type_name, kind_matches

Image = Union[int, str, "os.PathLike[str]", IO[bytes]]

GPT_SIGNATURE = b"EFI PART"
MBR_EXTENDED = (0x05, 0x0F, 0x85)
MBR_PROTECTIVE = 0xEE
GPT_MAX_ENTRIES = 65536
MAX_LOGICALS = 128


class PartitionError(ValueError):
    """A partition table that cannot be read or is refused; says which and why."""


@dataclass(frozen=True)
class Partition:
    """One partition (struct loopfd_partition); start and size in sectors."""

    number: int  # GPT entry index + 1; MBR slot 1-4, logicals from 5
    start: int  # first sector
    size: int  # sectors
    type: str  # GPT type GUID (upper case) or MBR type byte in hex ("83")
    uuid: str = ""  # GPT partition GUID; MBR: the kernel's PARTUUID, DISKID-NN
    name: str = ""  # GPT partition name; "" for MBR
    attrs: int = 0  # GPT attribute bits; MBR: the boot indicator
    sector_size: int = 512
    type_name: str = ""  # DPS name (esp, root-x86-64, ...) or ""
    extended: bool = False  # an MBR extended container (never attached)

    @property
    def start_bytes(self) -> int:
        """Bytes into the image: attach(offset=...)."""
        return self.start * self.sector_size

    @property
    def size_bytes(self) -> int:
        """Bytes: attach(sizelimit=...)."""
        return self.size * self.sector_size

    @property
    def bootable(self) -> bool:
        """MBR: the boot indicator is exactly 0x80 (sfdisk --json's bootable)."""
        return len(self.type) <= 2 and self.attrs == 0x80

    def describe(self) -> str:
        """"2 root-x86-64 'root'", for messages and listings."""
        kind = self.type_name or f"type {self.type}"
        return f"{self.number} {kind}" + (f" '{self.name}'" if self.name else "")


@dataclass(frozen=True)
class Table:
    """A partition table: label "gpt" or "dos", as sfdisk names them."""

    label: str
    id: str  # GPT disk GUID, or the MBR disk signature as 0x%08x
    sector_size: int
    partitions: list[Partition] = field(default_factory=list)
    first_lba: int = 0  # GPT usable LBAs; 0 for MBR
    last_lba: int = 0


class _Reader:
    """pread with bounds: reads outside the file and errors are PartitionError."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        try:
            self.size = os.fstat(fd).st_size
        except OSError as e:
            raise PartitionError(f"fstat: {e.strerror}") from e

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise PartitionError(f"the table needs bytes {offset}..{offset + length} "
                                 f"but the file has {self.size}")
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as e:
            raise PartitionError(f"reading byte {offset}: {e.strerror}") from e
        if len(data) != length:
            raise PartitionError(f"short read at byte {offset}")
        return data

    def has_gpt_signature(self, offset: int) -> bool:
        return offset + 8 <= self.size and self.read(offset, 8) == GPT_SIGNATURE


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw)).upper()


def _crc_ok(data: bytes, crc_at: int, crc: int) -> bool:
    zeroed = data[:crc_at] + b"\0\0\0\0" + data[crc_at + 4:]
    return zlib.crc32(zeroed) & 0xFFFFFFFF == crc


@dataclass(frozen=True)
class _GptHeader:
    lba: int
    alternate: int
    first_usable: int
    last_usable: int
    disk_guid: str
    entries_lba: int
    count: int
    entry_size: int
    entries_crc: int


_GPT_HEAD = struct.Struct("<8sIIIIQQQQ16sQIII")


def _gpt_header(r: _Reader, lba: int, ss: int) -> _GptHeader | None:
    """The valid GPT header at lba (CRC, own LBA, sane fields), or None."""
    if lba < 1 or (lba + 1) * ss > r.size:
        return None
    raw = r.read(lba * ss, ss)
    (sig, _rev, hsize, hcrc, _res, my_lba, alt, first, last, disk, entries_lba,
     count, esize, ecrc) = _GPT_HEAD.unpack_from(raw)
    if sig != GPT_SIGNATURE or hsize < 92 or hsize > ss or my_lba != lba:
        return None
    if not _crc_ok(raw[:hsize], 16, hcrc) or first > last:
        return None
    if esize < 128 or esize > 4096 or esize % 8 or count > GPT_MAX_ENTRIES:
        return None
    return _GptHeader(lba, alt, first, last, _guid(disk), entries_lba, count, esize, ecrc)


def _gpt_entries(r: _Reader, h: _GptHeader, ss: int) -> bytes | None:
    """The header's entry array if it lies in the file and its CRC is right."""
    length = h.count * h.entry_size
    if h.entries_lba < 1 or h.entries_lba * ss + length > r.size:
        return None
    raw = r.read(h.entries_lba * ss, length)
    return raw if zlib.crc32(raw) & 0xFFFFFFFF == h.entries_crc else None


def _gpt_partitions(h: _GptHeader, raw: bytes, ss: int) -> list[Partition]:
    parts = []
    for i in range(h.count):
        e = raw[i * h.entry_size:i * h.entry_size + 128]
        if e[:16] == b"\0" * 16:
            continue
        first, last, attrs = struct.unpack_from("<QQQ", e, 32)
        n = i + 1
        if last < first or first < h.first_usable or last > h.last_usable:
            raise PartitionError(f"partition {n} (LBA {first}..{last}) lies outside the "
                                 f"GPT's usable LBAs {h.first_usable}..{h.last_usable} "
                                 "(or ends before it starts)")
        kind = _guid(e[:16])
        name = e[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        parts.append(Partition(n, first, last - first + 1, kind, _guid(e[16:32]), name,
                               attrs, ss, gpt_type_name(kind)))
    return parts


def _read_gpt(r: _Reader, ss: int) -> Table:
    """The GPT at LBA 1 with ss-byte sectors (a protective MBR announced it)."""
    sectors = r.size // ss
    primary = _gpt_header(r, 1, ss)
    entries = _gpt_entries(r, primary, ss) if primary else None
    if primary and entries is not None:
        if primary.alternate >= sectors or primary.last_usable >= sectors:
            raise PartitionError(
                f"the GPT lies past the end of the file: its header (byte {ss}) puts the "
                f"backup header at LBA {primary.alternate} and the last usable LBA at "
                f"{primary.last_usable}, but the file has {sectors} sectors of {ss} "
                f"bytes ({r.size} bytes)")
        return Table("gpt", primary.disk_guid, ss, _gpt_partitions(primary, entries, ss),
                     primary.first_usable, primary.last_usable)
    backup = _gpt_header(r, sectors - 1, ss)
    if backup and _gpt_entries(r, backup, ss) is not None:
        raise PartitionError(
            f"the primary GPT header (LBA 1, byte {ss}) is invalid; only the backup at "
            f"byte {backup.lba * ss} is good: repair the image first "
            "(e.g. sfdisk -d IMAGE | sfdisk IMAGE)")
    if r.has_gpt_signature(ss):
        raise PartitionError(f"the GPT header at byte {ss} ({ss}-byte sectors) is invalid "
                             "(bad checksum or fields) and no valid backup header was "
                             "found at the last LBA")
    raise PartitionError(f"no partition table found (GPT or MBR, {ss}-byte sectors)"
                         f"{_other_gpt_hint(r, ss)}")


def _mbr_slots(sector: bytes) -> list[tuple[int, int, int, int]]:
    """(boot indicator, type, start, size) of the four slots of an MBR or EBR."""
    return [struct.unpack_from("<B3xB3xII", sector, 446 + 16 * slot) for slot in range(4)]


def _logicals(r: _Reader, ext_start: int, ext_size: int, ss: int,
              disk_id: int) -> list[Partition]:
    """Walk the EBR chain of the extended partition at ext_start."""
    parts: list[Partition] = []
    seen, ebr = set(), ext_start
    while True:
        if ebr in seen or len(seen) >= MAX_LOGICALS:
            raise PartitionError(f"the EBR chain of the extended partition loops or "
                                 f"has more than {MAX_LOGICALS} links (at sector {ebr})")
        seen.add(ebr)
        sector = r.read(ebr * ss, 512)
        if sector[510:512] != b"\x55\xaa":
            raise PartitionError(f"the EBR at sector {ebr} has no 0x55AA signature")
        slots = _mbr_slots(sector)
        boot, kind, start, size = slots[0]
        if kind != 0 and size != 0:
            n = 5 + len(parts)
            first = ebr + start
            if start == 0 or first + size > ext_start + ext_size:
                raise PartitionError(f"partition {n} (sectors {first}+{size}) lies "
                                     f"outside its extended partition "
                                     f"({ext_start}+{ext_size})")
            parts.append(Partition(n, first, size, f"{kind:x}", f"{disk_id:08x}-{n:02x}",
                                   attrs=boot, sector_size=ss,
                                   type_name=MBR_TYPES.get(kind, "")))
        _, next_kind, next_rel, _ = slots[1]
        if next_kind not in MBR_EXTENDED or next_rel == 0:
            return parts
        ebr = ext_start + next_rel
        if ebr >= ext_start + ext_size:
            raise PartitionError(f"the EBR at sector {ebr} lies outside its extended "
                                 f"partition ({ext_start}+{ext_size})")


def _mbr_sector(r: _Reader, ss: int) -> tuple[bytes | None, str]:
    """The MBR sector if it is one (signature, boot indicators), else why not."""
    if r.size < 512:
        return None, f"the file has {r.size} bytes"
    sector = r.read(0, 512)
    if sector[510:512] != b"\x55\xaa":
        return None, "no MBR signature"
    for slot, (boot, _, _, _) in enumerate(_mbr_slots(sector), 1):
        if boot not in (0x00, 0x80):
            return None, f"MBR slot {slot} has boot indicator {boot:#04x}, so this is no MBR"
    return sector, ""


def _read_mbr(r: _Reader, sector: bytes, ss: int) -> Table:
    """The MBR's partitions, logical ones included."""
    slots = _mbr_slots(sector)
    disk_id = struct.unpack_from("<I", sector, 440)[0]
    parts: list[Partition] = []
    for slot, (boot, kind, start, size) in enumerate(slots, 1):
        if kind == 0 or size == 0:
            continue
        ext = kind in MBR_EXTENDED
        parts.append(Partition(slot, start, size, f"{kind:x}", f"{disk_id:08x}-{slot:02x}",
                               attrs=boot, sector_size=ss,
                               type_name=MBR_TYPES.get(kind, ""), extended=ext))
        if ext and start != 0:
            parts.extend(_logicals(r, start, size, ss, disk_id))
    parts.sort(key=lambda p: p.number)
    return Table("dos", f"0x{disk_id:08x}", ss, parts)


def _may_overlap(a: Partition, b: Partition) -> bool:
    """An extended container holds its logical partitions by design."""
    return (a.extended and b.number > 4) or (b.extended and a.number > 4)


def _check_layout(table: Table, size: int) -> None:
    """Refuse partitions at sector 0, past the end of the file, or overlapping."""
    for p in table.partitions:
        if p.start == 0:
            raise PartitionError(f"partition {p.number} starts at sector 0, over the "
                                 "partition table")
        if p.start_bytes + p.size_bytes > size:
            raise PartitionError(
                f"partition {p.number} (sectors {p.start}..{p.start + p.size - 1}, bytes "
                f"{p.start_bytes}..{p.start_bytes + p.size_bytes - 1}) ends past the end "
                f"of the file ({size} bytes, {size // table.sector_size} sectors of "
                f"{table.sector_size})")
    for i, a in enumerate(table.partitions):
        for b in table.partitions[i + 1:]:
            if _may_overlap(a, b) or a.start + a.size <= b.start or \
                    b.start + b.size <= a.start:
                continue
            raise PartitionError(
                f"partitions {a.number} (sectors {a.start}..{a.start + a.size - 1}) and "
                f"{b.number} (sectors {b.start}..{b.start + b.size - 1}) overlap")


def detect_sector_size(r: _Reader) -> int:
    """4096 if a GPT signature sits at byte 4096, else 512; both is refused."""
    at512, at4k = r.has_gpt_signature(512), r.has_gpt_signature(4096)
    if at512 and at4k:
        raise PartitionError("GPT headers at byte 512 and at byte 4096: give the "
                             "sector size (-b 512 or -b 4096)")
    return 4096 if at4k else 512


def _other_gpt_hint(r: _Reader, ss: int) -> str:
    for other in (512, 4096):
        if other != ss and r.has_gpt_signature(other):
            return f"; a GPT header sits at byte {other}: {other}-byte sectors?"
    return ""


def read_fd(fd: int, sector_size: int | None = None) -> Table:
    """The table of the open file fd (see read_table)."""
    if sector_size is not None and (sector_size < 512 or sector_size > 65536 or
                                    sector_size & (sector_size - 1)):
        raise PartitionError(f"sector size {sector_size}: not a power of two from 512 "
                             "to 65536")
    r = _Reader(fd)
    ss = sector_size or detect_sector_size(r)
    # As libblkid: an MBR without a protective (0xEE) entry is the table,
    # a protective (or hybrid) one announces a GPT at LBA 1.
    mbr, why = _mbr_sector(r, ss)
    protective = mbr is not None and any(k == MBR_PROTECTIVE for _, k, _, _ in _mbr_slots(mbr))
    if mbr is not None and not protective:
        table = _read_mbr(r, mbr, ss)
    elif protective:
        table = _read_gpt(r, ss)  # a bad or missing primary: refused, naming the backup
    else:
        if r.has_gpt_signature(ss):
            why = f"a GPT header at byte {ss} but no protective MBR ({why})"
        raise PartitionError(f"no partition table found (GPT or MBR, {ss}-byte sectors): "
                             f"{why}{_other_gpt_hint(r, ss)}")
    _check_layout(table, r.size)
    return table


def read_table(image: Image, sector_size: int | None = None) -> Table:
    """Read the partition table of image (a path, an fd or an open binary file).

    sector_size: the logical sector size to read it with; None detects it.
    Raises PartitionError, its message starting with the image's name, when
    the table is missing, unusable or refused.
    """
    if isinstance(image, (str, os.PathLike)):
        what = os.fsdecode(image)
        try:
            fd = os.open(what, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            raise PartitionError(f"{what}: {e.strerror}") from e
        try:
            return _named(fd, what, sector_size)
        finally:
            os.close(fd)
    fd = image if isinstance(image, int) else image.fileno()
    name = getattr(image, "name", None)
    return _named(fd, str(name) if name else f"fd {fd}", sector_size)


def _named(fd: int, what: str, sector_size: int | None) -> Table:
    try:
        return read_fd(fd, sector_size)
    except PartitionError as e:
        raise PartitionError(f"{what}: {e}") from None


def read_partitions(image: Image, sector_size: int | None = None) -> list[Partition]:
    """The partitions of image, in table order (read_table(...).partitions)."""
    return read_table(image, sector_size).partitions


def _matches(p: Partition, sel: str) -> bool:
    if sel.isdigit() and sel.isascii():
        return p.number == int(sel)
    mbr = len(p.type) <= 2
    if mbr and sel[:2].lower() == "0x":
        try:
            return int(sel[2:], 16) == int(p.type, 16)
        except ValueError:
            return False
    return ((not mbr and p.type == sel.upper()) or
            (p.type_name != "" and (p.type_name == sel or kind_matches(p.type_name, sel)))
            or (p.name != "" and p.name == sel))


def _listing(parts: list[Partition]) -> str:
    text = ", ".join(p.describe() for p in parts)
    return "".join("?" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)


def select(table: Table, selector: str) -> Partition:
    """The one partition selector names (loopfd_partition_select): a number, a
    GPT name, a type GUID, an MBR type (0x83) or a DPS type name (esp,
    root-x86-64, or root/usr/... alone for any architecture).  No match or
    several raise PartitionError listing the table.
    """
    found = [p for p in table.partitions if _matches(p, selector)]
    if len(found) == 1:
        return found[0]
    if found:
        raise PartitionError(f"partition '{selector}' is ambiguous: {len(found)} "
                             f"partitions match: {_listing(found)} (select one by number)")
    raise PartitionError(f"no partition matches '{selector}' (a number, type name, type "
                         f"GUID or GPT name); the {table.label} table holds: "
                         f"{_listing(table.partitions) or 'nothing'}")
