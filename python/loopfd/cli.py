"""`python3 -m loopfd`: the C `loopfd` command's `run` and `partitions`, in Python.

The order of events is the C CLI's: open each IMAGE as the caller -> attach ->
close the IMAGE fds -> run COMMAND with the device fds on 3, 4, ... ->
COMMAND exits -> close our device fds -> release each device -> exit.
Several IMAGEs are attached and released in batches of up to 64 (one
request each way per batch; all of a batch or none attached).
Signals to forward are blocked from before the spawn to the end and taken
with sigwaitinfo, so nothing can skip the release.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from typing import NoReturn

from . import _paths
from . import protocol as P
from .errors import Error
from .partitions import Partition, PartitionError, Table, read_fd, read_table, select
from .session import AttachEntry, Device, Session, connect

FIRST_DEVICE_FD = 3
DEFAULT_TIMEOUT_MS = 10000
FORWARDED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}

HELP = f"""\
python3 -m loopfd - run a command with loop devices, without being root

SYNOPSIS
  python3 -m loopfd run [OPTION...] IMAGE [IMAGE...] -- COMMAND [ARG...]
  python3 -m loopfd partitions [--json] [-b N] IMAGE
  python3 -m loopfd --help | --version

  The Python client of loopfd; `loopfd --help` (the C command) is the full
  manual, and this command takes the same options.

  run: opens each IMAGE as you (read-write, or read-only with -r), attaches a
  loop device to it through loopfd-helper and runs COMMAND with the devices
  on fds 3, 4, ... and LOOPFD_DEVICE=/dev/fd/3, LOOPFD_NAME=loopN,
  LOOPFD_DEVICES, LOOPFD_NAMES.  When COMMAND exits every device is
  released: flushed to IMAGE and confirmed detached.

OPTIONS (they apply to every IMAGE)
  -r, --read-only          open IMAGE read-only and attach it read-only
  -o, --offset BYTES       the device starts BYTES into IMAGE
      --sizelimit BYTES    the device is at most BYTES long (default: to EOF)
  -b, --sector-size N      logical sector size: 512, 1024, 2048, 4096
      --direct-io          the device reads and writes IMAGE with O_DIRECT
  -P, --partscan           have the kernel scan the partition table
      --partitions         one IMAGE: the whole disk on fd 3 and every
                           partition as its own device on fds 4, 5, ...
      --partition SEL      only the partition SEL (repeatable), on fds 3, 4,
                           ... in the order given: a number, a GPT name, a
                           type GUID, an MBR type (0x83) or a type name (esp,
                           root, root-x86-64, usr, home, swap, linux-generic)
      --lock               flock(LOCK_EX) each device, so udev leaves it alone
      --grant              make /dev/loopN yours while attached
      --release-timeout S  wait up to S seconds for other openers (default 10)
      --socket PATH        use the helper daemon `loopfd-helper --listen PATH`
  -v, --verbose            report each device attached and released
  BYTES is a plain number, or one ending in KiB, MiB or GiB.

PARTITIONS (--partitions, --partition)
  The table is read from IMAGE here, unprivileged (no kernel partition
  parser); each partition is an offset/sizelimit window with the table's
  sector size (-b, else detected: 4096 if a GPT header sits at byte 4096).
  An MBR's extended container is not attached.  COMMAND also gets, per
  partition device (<N> its number in the table):
    LOOPFD_PART_<N>=/dev/fd/K, LOOPFD_PART_<N>_DEVICE (loopM),
    LOOPFD_PART_<N>_START, _SIZE (bytes in IMAGE), _TYPE, _TYPE_NAME, _NAME,
    _UUID; LOOPFD_PART_<TYPE>=/dev/fd/K (ESP, ROOT, ROOT_X86_64, ...) when
    exactly one device has that type; LOOPFD_SECTOR_SIZE; and
    LOOPFD_PARTITIONS, one word per partition device in fd order,
    NUMBER:/dev/fd/K:loopM:START:SIZE:TYPE.

ENVIRONMENT
  LOOPFD_SOCKET   the helper daemon's socket, when --socket is not given
  LOOPFD_HELPER   the helper to start instead of {_paths.HELPER_PATH};
                  ignored for root and in setuid programs

EXIT STATUS
  COMMAND's, or 128+N if signal N killed it; 1 if COMMAND succeeded but a
  release failed, or if loopfd failed before running COMMAND; 2 for a usage
  error; 126 if COMMAND could not be executed; 127 if it was not found.
"""


class UsageError(Exception):
    """A bad command line: exit status 2."""


@dataclass
class Options:
    """What `run` was asked to do."""

    read_only: bool = False
    offset: int = 0
    sizelimit: int = 0
    sector_size: int = 0
    direct_io: bool = False
    partscan: bool = False
    grant: bool = False
    lock: bool = False
    verbose: bool = False
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    timeout_arg: str | None = None
    socket: str | None = None
    all_partitions: bool = False
    partitions: list[str] = field(default_factory=list)


def parse_bytes(opt: str, arg: str) -> int:
    """"4096", "1MiB": bytes, as the C CLI takes them."""
    units = {"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    digits = arg.rstrip("KMGiB")
    unit = arg[len(digits):]
    if not digits.isdigit() or not digits.isascii() or unit not in units:
        raise UsageError(f"{opt}: invalid value '{arg}' (expected bytes, optionally "
                         "with KiB, MiB or GiB)")
    value = int(digits) * units[unit]
    if value >= 1 << 64:
        raise UsageError(f"{opt}: value '{arg}' is too large")
    return value


def parse_seconds(opt: str, arg: str) -> int:
    """"10", "0.5": milliseconds, at most 3 decimals."""
    whole, dot, frac = arg.partition(".")
    if not whole.isdigit() or not whole.isascii() or (dot and not (
            frac.isdigit() and frac.isascii() and len(frac) <= 3)):
        raise UsageError(f"{opt}: invalid value '{arg}' (expected seconds, like 10 or "
                         "0.5, at most 3 decimals)")
    ms = int(whole) * 1000 + int(frac.ljust(3, "0") or 0)
    if ms > 0xFFFFFFFF:
        raise UsageError(f"{opt}: value '{arg}' is too large")
    return ms


_FLAGS = {"-r": "read_only", "--read-only": "read_only", "--direct-io": "direct_io",
          "-P": "partscan", "--partscan": "partscan", "--grant": "grant",
          "--lock": "lock", "-v": "verbose", "--verbose": "verbose",
          "--partitions": "all_partitions"}
_VALUED = {"-o", "--offset", "--sizelimit", "-b", "--sector-size", "--release-timeout",
           "--socket", "--partition"}


def _take_value(o: Options, opt: str, arg: str) -> None:
    if opt in ("-o", "--offset"):
        o.offset = parse_bytes("--offset", arg)
    elif opt == "--sizelimit":
        o.sizelimit = parse_bytes("--sizelimit", arg)
    elif opt in ("-b", "--sector-size"):
        if not arg.isdigit() or not arg.isascii() or int(arg) > 0xFFFFFFFF:
            raise UsageError(f"--sector-size: invalid value '{arg}' (expected a number)")
        o.sector_size = int(arg)
    elif opt == "--release-timeout":
        o.timeout_ms, o.timeout_arg = parse_seconds(opt, arg), arg
    elif opt == "--socket":
        o.socket = arg
    else:
        o.partitions.append(arg)


def parse_run(args: list[str]) -> tuple[Options, list[str], list[str]]:
    """Options, IMAGEs and COMMAND of `run`; options go before the images."""
    o, i = Options(), 0
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):
        opt, eq, val = args[i].partition("=")
        if not opt.startswith("--") and len(opt) > 2:  # -o4096
            opt, eq, val = opt[:2], "=", args[i][2:]
        if opt in ("-h", "--help"):
            sys.stdout.write(HELP)
            sys.exit(0)
        if opt in ("-V", "--version"):
            print(f"loopfd {_paths.VERSION} (python)")
            sys.exit(0)
        if opt in _FLAGS and not eq:
            setattr(o, _FLAGS[opt], True)
        elif opt in _VALUED:
            if not eq:
                i += 1
                if i >= len(args):
                    raise UsageError(f"option '{opt}' requires an argument")
                val = args[i]
            _take_value(o, opt, val)
        else:
            raise UsageError(f"unrecognized option '{args[i]}'")
        i += 1
    rest = args[i:]
    if "--" not in rest:
        raise UsageError("missing '--' and COMMAND after the images "
                         "(loopfd run [OPTION...] IMAGE... -- COMMAND [ARG...])")
    dashes = rest.index("--")
    images, command = rest[:dashes], rest[dashes + 1:]
    for a in images:
        if a.startswith("-") and a != "-":
            raise UsageError(f"option '{a}' after an IMAGE: options go before the images")
    if not images:
        raise UsageError("no IMAGE before '--'")
    if not command:
        raise UsageError("no COMMAND after '--'")
    if (o.all_partitions or o.partitions) and (len(images) != 1 or o.offset or o.sizelimit):
        raise UsageError("--partitions and --partition take exactly one IMAGE; --offset "
                         "and --sizelimit do not go with them")
    return o, images, command


# ---- attaching ----------------------------------------------------------------


@dataclass
class Attached:
    """One device given to COMMAND: what it is a device of."""

    dev: Device
    part: Partition | None = None


def _attach(s: Session, fd: int, name: str, o: Options, offset: int, sizelimit: int,
            sector_size: int) -> Device:
    return s.attach(fd, offset=offset, sizelimit=sizelimit, read_only=o.read_only,
                    sector_size=sector_size, direct_io=o.direct_io, partscan=o.partscan,
                    grant=o.grant, name=name)


def _open(path: str, read_only: bool) -> int:
    flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags | os.O_NONBLOCK)
    except OSError as e:
        hint = " (-r attaches it read-only)" \
            if not read_only and e.errno in (errno.EACCES, errno.EROFS) else ""
        how = "reading" if read_only else "reading and writing"
        raise Error(f"{path}: cannot open for {how}: {e.strerror}{hint}") from e
    os.set_blocking(fd, True)
    return fd


def _chosen(path: str, table: Table, o: Options) -> list[Partition]:
    """Every partition but extended containers (--partitions), then the
    selected ones in the order given; each at most once."""
    chosen = [p for p in table.partitions if not p.extended] if o.all_partitions else []
    for sel in o.partitions:
        try:
            p = select(table, sel)
        except PartitionError as e:
            raise PartitionError(f"{path}: {e}") from None
        if p in chosen:
            raise PartitionError(f"{path}: --partition {sel}: partition {p.number} is "
                                 "selected twice")
        chosen.append(p)
    if not chosen:
        raise PartitionError(f"{path}: the {table.label} partition table has no "
                             "partition to attach")
    return chosen


def _attach_images(s: Session, images: list[str], o: Options) -> list[Attached]:
    """Attach images in batches of up to 64: all of a batch or none."""
    out: list[Attached] = []
    for first in range(0, len(images), P.MAX_BATCH):
        fds: list[int] = []
        try:
            for path in images[first:first + P.MAX_BATCH]:
                fds.append(_open(path, o.read_only))
            entries = [AttachEntry(fd, offset=o.offset, sizelimit=o.sizelimit,
                                   read_only=o.read_only, sector_size=o.sector_size,
                                   direct_io=o.direct_io, partscan=o.partscan,
                                   grant=o.grant, name=path)
                       for fd, path in zip(fds, images[first:])]
            out.extend(Attached(d) for d in s.attach_batch(entries))
        finally:
            for fd in fds:
                os.close(fd)
    return out


def attach_all(s: Session, images: list[str], o: Options) -> list[Attached]:
    """Attach every IMAGE, or the disk and its partitions; raise on the first failure."""
    if not (o.all_partitions or o.partitions):
        return _attach_images(s, images, o)
    out: list[Attached] = []
    for path in images:
        fd = _open(path, o.read_only)
        try:
            try:
                table = read_fd(fd, o.sector_size or None)
            except PartitionError as e:
                raise PartitionError(f"{path}: {e}") from None
            parts = _chosen(path, table, o)
            if o.all_partitions:
                out.append(Attached(_attach(s, fd, path, o, 0, 0, table.sector_size)))
            for p in parts:
                out.append(Attached(s.attach_partition(
                    fd, p, read_only=o.read_only, direct_io=o.direct_io, grant=o.grant,
                    name=f"{path} partition {p.number}"), p))
        finally:
            os.close(fd)
    return out


def _type_words(p: Partition) -> list[str]:
    """The words p is known by in LOOPFD_PART_<WORD>: its type name and, for a
    root or /usr partition of an architecture, the kind alone."""
    if not p.type_name:
        return []
    word = p.type_name.upper().replace("-", "_")
    kind = word.split("_", 1)[0]
    if kind in ("ROOT", "USR") and "VERITY" not in word and kind != word:
        return [word, kind]
    return [word]


def partition_env(devs: list[Attached]) -> dict[str, str]:
    """LOOPFD_PART_*, LOOPFD_SECTOR_SIZE and LOOPFD_PARTITIONS for COMMAND."""
    env: dict[str, str] = {}
    words, by_type = [], {}
    for i, a in enumerate(devs):
        p = a.part
        if p is None:
            continue
        fd_path = f"/dev/fd/{FIRST_DEVICE_FD + i}"
        key = f"LOOPFD_PART_{p.number}"
        env.update({key: fd_path, key + "_DEVICE": a.dev.name,
                    key + "_START": str(p.start_bytes), key + "_SIZE": str(p.size_bytes),
                    key + "_TYPE": p.type, key + "_TYPE_NAME": p.type_name,
                    key + "_NAME": p.name, key + "_UUID": p.uuid,
                    "LOOPFD_SECTOR_SIZE": str(p.sector_size)})
        for word in _type_words(p):
            by_type.setdefault(word, []).append(fd_path)
        words.append(f"{p.number}:{fd_path}:{a.dev.name}:{p.start_bytes}:{p.size_bytes}:"
                     f"{p.type_name or p.type}")
    env.update({f"LOOPFD_PART_{w}": paths[0] for w, paths in by_type.items()
                if len(paths) == 1})
    if words:
        env["LOOPFD_PARTITIONS"] = " ".join(words)
    return env


# ---- the command --------------------------------------------------------------


def _spawn(command: list[str], devs: list[Attached], env: dict[str, str],
           mask: set[signal.Signals]) -> int:
    """Start COMMAND with device i on fd 3+i; each is first copied above that
    range so that placing one cannot overwrite another."""
    top = FIRST_DEVICE_FD + len(devs)
    copies = [fcntl.fcntl(a.dev.fd, fcntl.F_DUPFD_CLOEXEC, top) for a in devs]
    actions = [(os.POSIX_SPAWN_DUP2, c, FIRST_DEVICE_FD + i) for i, c in enumerate(copies)]
    try:
        try:
            return os.posix_spawnp(command[0], command, env, file_actions=actions,
                                   setsigmask=mask)
        except OSError as e:
            if e.errno != errno.ENOEXEC:
                raise
            # as execvp(3): a file the kernel cannot run by itself goes to /bin/sh
            found = command[0] if "/" in command[0] else shutil.which(command[0])
            return os.posix_spawn("/bin/sh", ["/bin/sh", found or command[0]] + command[1:],
                                  env, file_actions=actions, setsigmask=mask)
    finally:
        for c in copies:
            os.close(c)


def _status(st: int) -> int:
    if os.WIFEXITED(st):
        return os.WEXITSTATUS(st)
    if os.WIFSIGNALED(st):
        return 128 + os.WTERMSIG(st)
    return 1


def run_command(command: list[str], devs: list[Attached], env: dict[str, str]) -> int:
    """Run COMMAND, forwarding signals; its exit status (126/127 if it cannot start)."""
    wait_set = FORWARDED | {signal.SIGCHLD}
    orig = signal.pthread_sigmask(signal.SIG_BLOCK, wait_set)
    try:
        pid = _spawn(command, devs, env, orig)
    except OSError as e:
        print(f"loopfd: {command[0]}: {e.strerror}", file=sys.stderr)
        return 127 if e.errno == errno.ENOENT else 126
    while True:
        info = signal.sigwaitinfo(wait_set)
        if info.si_signo != signal.SIGCHLD:
            # terminal signals reach COMMAND's process group by themselves
            if not (info.si_signo in (signal.SIGINT, signal.SIGQUIT) and info.si_code == 0x80):
                os.kill(pid, info.si_signo)
            continue
        done, st = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return _status(st)


def release_all(s: Session, devs: list[Attached], o: Options) -> int:
    """Close our device fds, release the devices in batches of up to 64,
    each one's outcome reported as if alone; the number that failed."""
    for a in devs:
        a.dev.close_fd()
    held = [a.dev for a in devs if a.dev.id in s.held]
    failed = 0
    for first in range(0, len(held), P.MAX_BATCH):
        batch = held[first:first + P.MAX_BATCH]
        try:
            results = s.release_batch(batch, o.timeout_ms / 1000)
        except Error as e:
            print(f"loopfd: {e}", file=sys.stderr)
            failed += len(batch)
            continue
        for r in results:
            if r.error is not None:
                print(f"loopfd: {r.error}", file=sys.stderr)
                failed += 1
            elif o.verbose:
                print(f"loopfd: released {r.path} (image {r.image}), waited "
                      f"{r.waited_ms} ms", file=sys.stderr)
    return failed


def _flags_text(flags: int) -> str:
    words = ["read-only" if flags & P.READ_ONLY else "read-write"]
    words += [w for bit, w in ((P.PARTSCAN, "partscan"), (P.DIRECT_IO, "direct-io"),
                                (P.GRANT, "granted"), (P.AUTOCLEAR, "autoclear"))
              if flags & bit]
    return ",".join(words)


def _prepare(s: Session, devs: list[Attached], o: Options) -> None:
    max_ms = s.info.max_timeout_ms
    if o.timeout_ms > max_ms:
        if o.timeout_arg is not None:
            raise UsageError(f"--release-timeout {o.timeout_arg}: the helper allows at "
                             f"most {max_ms // 1000}.{max_ms % 1000:03d} seconds")
        o.timeout_ms = max_ms
    for a in devs:
        if o.lock:
            fcntl.flock(a.dev.fd, fcntl.LOCK_EX)
        if o.verbose:
            d = a.dev
            print(f"loopfd: {d.image} -> {d.path} ({d.major}:{d.minor}, {d.size} bytes, "
                  f"{_flags_text(d.flags)})", file=sys.stderr)


def cmd_run(args: list[str]) -> int:
    """`run`: the exit status."""
    o, images, command = parse_run(args)
    devs: list[Attached] = []
    try:
        s = connect(o.socket)
    except Error as e:
        print(f"loopfd: {e}", file=sys.stderr)
        return 1
    try:
        try:
            devs = attach_all(s, images, o)
            _prepare(s, devs, o)
        except (Error, PartitionError, OSError) as e:
            print(f"loopfd: {e}", file=sys.stderr)
            devs = [Attached(d) for d in s.held.values()]
            release_all(s, devs, o)
            return 1
        except UsageError:
            release_all(s, [Attached(d) for d in s.held.values()], o)
            raise
        env = dict(os.environ)
        env.update({
            "LOOPFD_DEVICE": f"/dev/fd/{FIRST_DEVICE_FD}",
            "LOOPFD_NAME": devs[0].dev.name,
            "LOOPFD_DEVICES": " ".join(f"/dev/fd/{FIRST_DEVICE_FD + i}"
                                       for i in range(len(devs))),
            "LOOPFD_NAMES": " ".join(a.dev.name for a in devs),
        })
        env.update(partition_env(devs))
        status = run_command(command, devs, env)
        failed = release_all(s, devs, o)
        return 1 if failed and status == 0 else status
    finally:
        s.close()


# ---- partitions ----------------------------------------------------------------


def table_json(table: Table, image: str) -> dict[str, object]:
    """The layout and field meanings of sfdisk --json (start and size in
    sectors, type, uuid, name, bootable), plus number, start_bytes,
    size_bytes, type_name and extended, as `loopfd partitions --json`."""
    parts = []
    for p in table.partitions:
        entry: dict[str, object] = {
            "number": p.number, "start": p.start, "size": p.size,
            "start_bytes": p.start_bytes, "size_bytes": p.size_bytes, "type": p.type,
            "type_name": p.type_name}
        if table.label == "gpt":
            entry["uuid"] = p.uuid
            if p.name:
                entry["name"] = p.name
        else:
            if p.bootable:
                entry["bootable"] = True
            if p.extended:
                entry["extended"] = True
        parts.append(entry)
    return {"partitiontable": {"label": table.label, "id": table.id, "device": image,
                               "unit": "sectors", "sectorsize": table.sector_size,
                               "partitions": parts}}


def cmd_partitions(args: list[str]) -> int:
    """`partitions [--json] [-b N] IMAGE`."""
    as_json, ss, rest = False, None, list(args)
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if opt == "--json":
            as_json = True
        elif opt in ("-b", "--sector-size") and rest and rest[0].isdigit():
            ss = int(rest.pop(0))
        else:
            raise UsageError(f"partitions: unrecognized option '{opt}'")
    if len(rest) != 1:
        raise UsageError("partitions takes one IMAGE")
    try:
        table = read_table(rest[0], ss)
    except PartitionError as e:
        print(f"loopfd: {e}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(table_json(table, rest[0]), indent=2))
        return 0
    print(f"{rest[0]}: {table.label}, {table.sector_size}-byte sectors, id {table.id}")
    print(f"{'#':>3} {'start':>10} {'sectors':>10} {'offset':>12} {'bytes':>12}  type")
    for p in table.partitions:
        label = f"  '{p.name}'" if p.name else ""
        kind = p.type_name or p.type
        print(f"{p.number:>3} {p.start:>10} {p.size:>10} {p.start_bytes:>12} "
              f"{p.size_bytes:>12}  {kind}{' (extended)' if p.extended else ''}{label}")
    return 0


def usage(msg: str) -> NoReturn:
    """Print a usage error and exit 2."""
    print(f"loopfd: {msg}\nTry 'python3 -m loopfd --help' for more information.",
          file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    # an inherited SIG_IGN would reap COMMAND behind our back
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        if not args:
            raise UsageError("no command given (run ... -- COMMAND, or partitions IMAGE)")
        if args[0] in ("-h", "--help"):
            sys.stdout.write(HELP)
            return 0
        if args[0] in ("-V", "--version"):
            print(f"loopfd {_paths.VERSION} (python)")
            return 0
        if args[0] == "run":
            return cmd_run(args[1:])
        if args[0] == "partitions":
            return cmd_partitions(args[1:])
        raise UsageError(f"unknown command '{args[0]}' (the commands are 'run' and "
                         "'partitions')")
    except UsageError as e:
        usage(str(e))
