#!/usr/bin/env bash
# make deb-check (as root; CI runs it after make check): the Debian packages
# built from a copy of this tree with `dpkg-buildpackage -us -uc -b`, checked
# with lintian (every tag fails but those overridden, with a reason, in
# debian/*.lintian-overrides), installed with dpkg -i, used for the main job
# (the loopfd command, the libloopfd(3) example, the Python client)
# by a temporary user in group loopfd, then purged.  The machine is left as
# it was: packages, the helper's statoverride, the loopfd group, the user,
# the temp dir, loop devices (only those backed by files in the temp dir).
# Prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/prefix.sh
require_root "make deb-check"

passed=0; failed=0; skipped=0; failures=()
result() {
	if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1"
	else failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1"; fi
}
summary() {
	echo
	for f in "${failures[@]}"; do echo "failed: $f"; done
	echo "$passed passed, $failed failed, $skipped skipped"
	[ "$failed" = 0 ]
}

for tool in dpkg-buildpackage dh lintian; do
	if ! command -v $tool > /dev/null; then
		echo "SKIP deb-check: $tool missing (make deps installs it)"
		skipped=$((skipped + 1)); summary; exit
	fi
done
# What this test creates and removes must not exist already: it would be
# someone else's, and purging it would not leave the machine as it was.
for p in loopfd libloopfd1 libloopfd-dev python3-loopfd; do
	if dpkg-query -W -f='${Status}' $p 2>/dev/null | grep -q installed; then
		echo "deb-check: package $p is installed already; not touching it"; exit 1
	fi
done
if getent group loopfd > /dev/null || dpkg-statoverride --list /usr/libexec/loopfd-helper > /dev/null; then
	echo "deb-check: group loopfd or a statoverride for the helper exists already; not touching it"
	exit 1
fi

W=$(mktemp -d /tmp/loopfd-deb.XXXXXX)
chmod 0755 "$W"
USERNAME=loopfd-t$$
cleanup() {
	local rc=$? d
	for d in $(losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v w="$W/" 'index($2, w) == 1 { print $1 }'); do
		echo "cleanup: detaching leaked $d"; losetup -d "$d" || true
	done
	if getent passwd "$USERNAME" > /dev/null; then userdel "$USERNAME" || rc=1; fi
	if getent group "$USERNAME" > /dev/null; then groupdel "$USERNAME" || true; fi
	dpkg --purge python3-loopfd loopfd libloopfd-dev libloopfd1 > "$W/purge.log" 2>&1 || { cat "$W/purge.log"; rc=1; }
	rm -rf "$W"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build the packages from a copy of the tree ($W)"
mkdir "$W/src"
if [ -d .git ] || git rev-parse --git-dir > /dev/null 2>&1; then
	git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$W/src"
else
	tar -cf - --exclude='./build*' . | tar -xf - -C "$W/src"
fi
(cd "$W/src" && dpkg-buildpackage -us -uc -b) > "$W/build.log" 2>&1
rc=$?; [ $rc = 0 ] || tail -30 "$W/build.log"
result dpkg-buildpackage $rc
[ $rc = 0 ] || { summary; exit 1; }
ls "$W"/*.deb | sed "s|$W/|   |"

echo "== lintian"
lintian --fail-on error,warning,info,pedantic -I --pedantic "$W"/*.changes 2>&1 |
	grep -v '^running with root privileges' | tee "$W/lintian.log"
result lintian "${PIPESTATUS[0]}"

echo "== dpkg -i"
debs=("$W"/loopfd_*.deb "$W"/libloopfd1_*.deb "$W"/libloopfd-dev_*.deb "$W"/python3-loopfd_*_all.deb)
dpkg -i "${debs[@]}" > "$W/install.log" 2>&1
rc=$?; [ $rc = 0 ] || cat "$W/install.log"
result dpkg-install $rc
[ $rc = 0 ] || { summary; exit 1; }

H=/usr/libexec/loopfd-helper
[ "$(stat -c '%a %U %G' $H)" = "4754 root loopfd" ]
result "helper 4754 root:loopfd ($(stat -c '%a %U %G' $H))" $?
dpkg-statoverride --list $H | grep -q '^root loopfd 4754 '
result statoverride $?
dpkg-query -W -f='${Conffiles}\n' loopfd | grep -q '^ /etc/loopfd.conf '
result "policy is a conffile" $?
for m in loopfd loopfd-helper loopfd.conf libloopfd; do man -w $m > /dev/null || echo "no man page $m"; done |
	grep . ; result "man pages found by man -w" $(( ! $? ))
systemd-analyze verify /lib/systemd/system/loopfd.socket /lib/systemd/system/loopfd.service 2>&1 | grep . ;
result "installed units verify" $(( ! $? ))
[ ! -e /etc/systemd/system/sockets.target.wants/loopfd.socket ]
result "socket not enabled by the package" $?

echo "== the main job as a member of group loopfd"
useradd --system --no-create-home --home-dir "$W" --shell /usr/sbin/nologin \
	--user-group --groups loopfd "$USERNAME"
as_user() { setpriv --reuid="$USERNAME" --regid="$USERNAME" --init-groups -- "$@"; }
truncate -s 64M "$W/fs.img" "$W/raw.img"
head -c $((4 << 20)) /dev/urandom > "$W/data"
chown "$USERNAME:" "$W"/fs.img "$W"/raw.img
chmod 0644 "$W/data"
as_user loopfd run --grant "$W/fs.img" -- mkfs.ext4 -q /dev/fd/3 &&
	e2fsck -fn "$W/fs.img" > /dev/null
result "loopfd run --grant img -- mkfs.ext4 -q /dev/fd/3; e2fsck clean" $?
as_user loopfd run "$W/raw.img" -- sh -c 'dd if="$1" bs=1M conv=notrunc status=none >&3' sh "$W/data" &&
	cmp -n $((4 << 20)) "$W/data" "$W/raw.img"
result "buffered write through fd 3 is in the image" $?
[ -z "$(losetup -j "$W/fs.img")$(losetup -j "$W/raw.img")" ]
result "nothing left attached" $?
truncate -s 8M "$W/nobody.img"; chown 65534:65534 "$W/nobody.img"
! setpriv --reuid=65534 --regid=65534 --clear-groups loopfd run "$W/nobody.img" -- true 2> "$W/err" &&
	grep -q "loopfd-helper" "$W/err"
result "uid 65534 (not in group loopfd) cannot run the helper: $(head -c 160 "$W/err")" $?

echo "== libloopfd-dev: the libloopfd(3) example, built with pkg-config"
zcat /usr/share/man/man3/libloopfd.3.gz | sed -n '/^\.SH EXAMPLES/,/^\.EE/p' | sed '1,2d;$d' |
	sed -e 's/\\-/-/g' -e "s/\\\\(aq/'/g" > "$W/example.c"
cc -o "$W/example" "$W/example.c" $(pkg-config --cflags --libs loopfd) &&
	(cd "$W" && ln -s raw.img disk.img && as_user ./example) &&
	[ "$(head -c 5 "$W/raw.img")" = hello ]
result "libloopfd example: pkg-config, libloopfd.so.1, attach+write+release" $?

echo "== python3-loopfd: the module and python3 -m loopfd, with /usr/bin/python3"
# -I: the installed module only (not the tree's python/, not a user site,
# no PYTHON* variables); env -u: the installed helper, not LOOPFD_HELPER's.
as_py() { as_user env -u LOOPFD_HELPER -u LOOPFD_SOCKET /usr/bin/python3 -I "$@"; }
PY=/usr/lib/python3/dist-packages/loopfd
ls "$PY"/__pycache__/__init__.cpython-3*.pyc > /dev/null 2>&1
result "byte-compiled at install (py3compile)" $?
truncate -s 64M "$W/py.img"; chown "$USERNAME:" "$W/py.img"
(cd "$W" && as_py - "$W/py.img" "$W/data" "$PY/__init__.py" > "$W/py.out" 2>&1) <<'PYEOF'
import os, sys, loopfd
image, data, installed = sys.argv[1:]
assert loopfd.__file__ == installed, loopfd.__file__
payload = open(data, "rb").read()
with loopfd.connect() as session:
    assert session.info.mode == loopfd.MODE_SETUID, session.info
    dev = session.attach(image)
    view = memoryview(payload)
    while view:
        view = view[os.write(dev.fd, view[:1 << 20]):]
    receipt = dev.release()
print("released", receipt.path)
PYEOF
rc=$?; [ $rc = 0 ] || cat "$W/py.out"
[ $rc = 0 ] && cmp -n $((4 << 20)) "$W/data" "$W/py.img"
result "python: connect, attach, buffered write through dev.fd, release; data in the image" $?
(cd "$W" && as_py -m loopfd run "$W/py.img" -- true)
result "python3 -m loopfd run img -- true" $?
(cd "$W" && as_py -m loopfd run "$W/py.img" -- sh -c 'printf pyrun >&3') &&
	[ "$(head -c 5 "$W/py.img")" = pyrun ]
result "python3 -m loopfd run img -- sh -c 'printf pyrun >&3'; in the image" $?
[ -z "$(losetup -j "$W/py.img")" ]
result "nothing left attached (python)" $?

echo "== purge"
userdel "$USERNAME" && { groupdel "$USERNAME" 2>/dev/null || true; }
dpkg --purge python3-loopfd loopfd libloopfd-dev libloopfd1 > "$W/purge.log" 2>&1
result "dpkg --purge" $?
left=""
getent group loopfd > /dev/null && left+=" group"
dpkg-statoverride --list $H > /dev/null && left+=" statoverride"
[ -e $H ] && left+=" helper"
[ -e /etc/loopfd.conf ] && left+=" /etc/loopfd.conf"
[ -e "$PY" ] && left+=" $PY"
[ -z "$left" ]; result "purge leaves nothing (left:${left:- nothing})" $?

summary
