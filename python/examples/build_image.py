#!/usr/bin/python3
"""An osbuild-style stage: a partitioned disk image from a file tree, without root.

    build_image.py --tree DIR --output disk.img [--size-mib 96] [--sector-size 4096]

1. the image file is created and partitioned with sfdisk (GPT: an ESP and a
   root partition), as the caller;
2. each partition is attached through loopfd as an offset/sizelimit window
   (read by loopfd.read_table from the file: no kernel partition parser) with
   grant, so that mkfs and mtools can open /dev/loopN by path: the ESP gets a
   FAT filesystem and the tree's top-level files (mcopy), root an ext4 made
   from the whole tree (mkfs.ext4 -d);
3. every device is released (flushed, detached) before the stage checks the
   result: fsck.fat -n and e2fsck -fn on new attachments, and each file read
   back from both filesystems (mtype, debugfs) and compared.

Exit status 0 when the image is complete and checked; 1 with a message otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import loopfd

ESP_MIB = 40
TOOLS_ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1",
                 PATH="/usr/sbin:/usr/bin:/sbin:/bin:" + os.environ.get("PATH", ""))


def run(*cmd: str, stdin: str | None = None) -> str:
    """Run a tool; its stdout, or an exception carrying its stderr."""
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=TOOLS_ENV)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def partition(session: loopfd.Session, image: str, sector_size: int) -> None:
    """Write a GPT with an ESP and a root partition (sfdisk on the file, or on a
    loop device of the wanted sector size, which a regular file cannot have)."""
    script = (f"label: gpt\nsize={ESP_MIB}MiB, type=uefi, name=esp\n"
              "type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n")
    if sector_size == 512:
        run("sfdisk", "-q", image, stdin=script)
        return
    with session.attach(image, sector_size=sector_size, grant=True) as disk:
        run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk.path, stdin=script)


def top_files(tree: str) -> list[str]:
    return sorted(n for n in os.listdir(tree) if os.path.isfile(os.path.join(tree, n)))


def format_partitions(session: loopfd.Session, image: str, tree: str) -> None:
    """mkfs each partition through its own loop device, and fill it."""
    table = loopfd.read_table(image)
    esp, root = loopfd.select(table, "esp"), loopfd.select(table, "root")
    with session.attach_partition(image, esp, grant=True) as dev:
        run("mkfs.vfat", "-n", "ESP", dev.path)
        for name in top_files(tree):
            run("mcopy", "-i", dev.path, os.path.join(tree, name), "::/" + name)
    with session.attach_partition(image, root, grant=True) as dev:
        run("mkfs.ext4", "-q", "-L", "root", "-d", tree, dev.path)


def check(session: loopfd.Session, image: str, tree: str) -> None:
    """fsck both filesystems and compare every file with the tree.

    The tools open /dev/loopN by path, which needs grant, and the helper
    grants no read-only device (the owner of a node could open it
    read-write): the devices are read-write, the tools only read.
    """
    table = loopfd.read_table(image)
    esp, root = loopfd.select(table, "esp"), loopfd.select(table, "root")
    with session.attach_partition(image, esp, grant=True) as dev:
        run("fsck.fat", "-n", dev.path)
        for name in top_files(tree):
            compare(tree, name, run("mtype", "-i", dev.path, "::/" + name), "ESP")
    with session.attach_partition(image, root, grant=True) as dev:
        run("e2fsck", "-fn", dev.path)
        for top, _dirs, files in os.walk(tree):
            for name in files:
                rel = os.path.relpath(os.path.join(top, name), tree)
                compare(tree, rel, run("debugfs", "-R", f"cat /{rel}", dev.path), "root")


def compare(tree: str, rel: str, got: str, where: str) -> None:
    with open(os.path.join(tree, rel), encoding="utf-8") as f:
        if f.read() != got:
            raise RuntimeError(f"{rel}: the copy in the {where} filesystem differs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--tree", required=True, help="the files to put in the image")
    ap.add_argument("--output", required=True, help="the image file to create")
    ap.add_argument("--size-mib", type=int, default=96)
    ap.add_argument("--sector-size", type=int, default=512, choices=(512, 4096))
    args = ap.parse_args()
    try:
        with open(args.output, "xb") as f:
            f.truncate(args.size_mib << 20)
        with loopfd.connect() as session:
            partition(session, args.output, args.sector_size)
            format_partitions(session, args.output, args.tree)
            check(session, args.output, args.tree)
    except (loopfd.Error, loopfd.PartitionError, RuntimeError, OSError) as e:
        print(f"build_image: {e}", file=sys.stderr)
        return 1
    table = loopfd.read_table(args.output)
    print(f"build_image: {args.output}: {table.sector_size}-byte sectors, " +
          ", ".join(p.describe() for p in table.partitions) + ": formatted and checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
