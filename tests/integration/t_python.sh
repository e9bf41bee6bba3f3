#!/usr/bin/env bash
# The Python client (python/): installed by `make install-python` into $T with
# the temp prefix's helper path, and by pip offline; its unittest suites run
# with Debian's /usr/bin/python3 as uid 65534 against the setuid helper, a
# --listen daemon and systemd socket activation; policy refusals through a
# running daemon (the policy is read per connection); no_new_privs and user
# namespaces; batches (41 images, failure at entry K under a per-user limit of 3,
# one busy device among released ones); the osbuild-style example, its image checked again here as root;
# the partition reader against sfdisk and against the C client's answers.
. "$(dirname "$0")/../lib.sh"

PY=/usr/bin/python3
ROOT=$(pwd)
site=$T/site
make -s -C "$ROOT" install-python PREFIX="$PREFIX" PYTHON=$PY PYTHONDIR="$site" >/dev/null \
	|| fail "make install-python"
version=$(sed -n 's/^VERSION *:= *//p' "$ROOT/Makefile")
grep -qx "HELPER_PATH = \"$HELPER\"" "$site/loopfd/_paths.py" \
	|| fail "_paths.py does not name $HELPER: $(cat "$site/loopfd/_paths.py")"
grep -qx "version = \"$version\"" "$ROOT/python/pyproject.toml" \
	|| fail "python/pyproject.toml's version is not the Makefile's $version"
[ "$(PYTHONPATH=$site $PY -m loopfd --version)" = "loopfd $version (python)" ] \
	|| fail "python3 -m loopfd --version"

# pip, offline, with Debian's setuptools (no build isolation, no index)
cp -r "$ROOT/python" "$T/pysrc"
$PY -m pip install -q --no-build-isolation --no-index --no-deps --target "$T/pip" \
	"$T/pysrc" 2> "$T/pip.err" || { cat "$T/pip.err"; fail "pip install ./python offline"; }
PYTHONPATH=$T/pip $PY -c 'import loopfd, loopfd.partitions' || fail "pip-installed copy"
[ -e "$T/pip/loopfd/py.typed" ] || fail "py.typed not installed"

# The tests run from a copy uid 65534 can read, against the installed package.
cp -r "$ROOT/python/tests" "$T/tests"
cp -r "$ROOT/python/examples" "$T/examples"
cp "$ROOT/tests/partition_images.sh" "$T/tests/"	# the C client's test images too
chmod -R a+rX "$site" "$T/tests" "$T/examples"
work=$T/work; mkdir "$work"; chmod 01777 "$work"

suite() {	# suite MODE SOCKET TESTS...
	local mode=$1 sock=$2; shift 2
	if ! (cd "$T/tests" && as_nobody env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		PYTHONPATH="$site" LOOPFD_TEST_DIR="$work" LOOPFD_TEST_MODE="$mode" \
		LOOPFD_C_CLI="$LOOPFD" LOOPFD_PT_IMAGES="$T/tests/partition_images.sh" \
		${sock:+LOOPFD_SOCKET=$sock} $PY -m unittest "$@") > "$T/unit.log" 2>&1; then
		cat "$T/unit.log"; fail "python tests, $mode mode: $*"
	fi
	! grep -q "skipped" "$T/unit.log" || fail "python tests skipped, $mode mode: $*"
	note "$mode: $(tail -1 "$T/unit.log") ($*)"
}

suite setuid "" test_client test_protocol_errors test_partitions test_fake_helper

# (SetuidTest is about the spawned helper only; the deadlines, 12 s, run once)
socket_tests="test_client.SessionTest test_client.CliRunTest test_client.ApiErrorTest
	test_protocol_errors.RawProtocolTest test_protocol_errors.MappingTest"
sock=$T/loopfd.sock
"$HELPER" --listen "$sock" 2> "$T/daemon.log" &
remember_pid $!
wait_until 5 test -S "$sock" || fail "daemon did not create $sock"
suite listen "$sock" $socket_tests

asock=$T/act.sock
systemd-socket-activate --seqpacket -l "$asock" "$HELPER" --systemd 2> "$T/act.log" &
remember_pid $!
wait_until 5 test -S "$asock" || fail "systemd-socket-activate did not listen"
chmod 0666 "$asock"
suite systemd "$asock" $socket_tests

# Policy refusals, each through the daemon started above: a new connection
# reads the policy afresh.
mkimage "$T/img" 4
expect_refusal() {	# expect_refusal EXCEPTION CODE
	as_nobody env PYTHONPATH="$site" LOOPFD_SOCKET="$sock" $PY -c "
import loopfd, sys
try:
    with loopfd.connect() as s:
        $2
except loopfd.$1 as e:
    assert e.reason == loopfd.$1.reason and e.text, e
    print(e); sys.exit(0)
sys.exit('no loopfd.$1')" > "$T/refusal" 2>&1 || { cat "$T/refusal"; fail "expected $1"; }
	note "$1: $(cat "$T/refusal")"
}
write_config "allow-grant no"
expect_refusal ForbiddenOptionError "s.attach('$T/img', grant=True)"
write_config "allow-users root"
expect_refusal NotAuthorizedError "pass"
write_config "allow-grant yes"
chmod 0666 "$LOOPFD_CONF"
expect_refusal ConfigError "pass"
remove_config

# Batches: 41 images in one request each way needs a per-user limit above the
# default 16; a limit of 3 makes a batch fail at entry 3. Setuid and daemon.
write_config "max-devices-per-user 64"
suite setuid "" test_batch.BatchTest test_batch.CliBatchTest
suite listen "$sock" test_batch.BatchTest test_batch.CliBatchTest
write_config "max-devices-per-user 3"
suite setuid "" test_batch.LimitTest
suite listen "$sock" test_batch.LimitTest
remove_config

# no_new_privs (bubblewrap): the setuid route says why and where to go...
if as_nobody bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev \
	--bind "$T" "$T" env PYTHONPATH="$site" $PY -c 'import loopfd; loopfd.connect()' \
	2> "$T/err"; then
	fail "setuid spawn under no_new_privs claimed success"
fi
grep -q "ConnectError: connect: no_new_privs is set" "$T/err" || fail "no clear error: $(cat "$T/err")"
grep -q "LOOPFD_SOCKET" "$T/err" || fail "no pointer to socket mode: $(cat "$T/err")"
# A user namespace: the same, naming the namespace.
if as_nobody env PYTHONPATH="$site" unshare -Ur $PY -c 'import loopfd; loopfd.connect()' \
	2> "$T/err"; then
	fail "setuid spawn in a user namespace claimed success"
fi
grep -q "ConnectError: connect: this process runs in a user namespace" "$T/err" \
	|| fail "no clear error in a user namespace: $(cat "$T/err")"
# ...and socket mode works in both.
writer='import os, loopfd
with loopfd.connect() as s, s.attach(os.environ["IMG"]) as dev:
    os.write(dev.fd, b"sandboxed" * 512)'
for wrap in "bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --bind $T $T" \
	    "unshare -Ur"; do
	: > "$T/img"; truncate -s 4M "$T/img"
	as_nobody env PYTHONPATH="$site" LOOPFD_SOCKET="$sock" IMG="$T/img" $wrap \
		$PY -c "$writer" 2> "$T/err" || { cat "$T/err"; fail "client in: $wrap"; }
	[ "$(head -c 9 "$T/img")" = sandboxed ] || fail "data from the client in $wrap missing"
	assert_no_device_for "$T/img"
done
note "no_new_privs: clear error; bwrap and userns clients served by the daemon"

# sfdisk_fields IMAGE SECTOR_SIZE: "start size start size" of partitions 1 and
# 2, in sectors, as sfdisk reads them (through a read-only loop device of that
# sector size, made here as root and detached at once, for 4Kn).
sfdisk_fields() {
	local dev json
	dev=$(losetup -f --show -r -b "$2" "$1") || fail "losetup -b $2 $1"
	json=$(sfdisk -J "$dev"); losetup -d "$dev"
	$PY -c 'import json, sys
p = json.loads(sys.argv[1])["partitiontable"]["partitions"]
print(p[0]["start"], p[0]["size"], p[1]["start"], p[1]["size"])' "$json"
}

# The osbuild-style example, 512 and 4Kn, and its images checked again here.
mkdir -p "$T/tree/etc"
echo "hello from the tree" > "$T/tree/hello.txt"
echo "option = 1" > "$T/tree/etc/app.conf"
chmod -R a+rX "$T/tree"
for ss in 512 4096; do
	img=$work/disk$ss.img
	as_nobody env PYTHONPATH="$site" $PY "$T/examples/build_image.py" --tree "$T/tree" \
		--output "$img" --sector-size $ss > "$T/ex.log" 2>&1 \
		|| { cat "$T/ex.log"; fail "example stage ($ss)"; }
	note "$(cat "$T/ex.log")"
	assert_no_device_for "$img"
	read -r esp_start esp_size root_start root_size < <(sfdisk_fields "$img" $ss)
	dd if="$img" of="$T/esp" bs=$ss skip=$esp_start count=$esp_size status=none
	dd if="$img" of="$T/root" bs=$ss skip=$root_start count=$root_size status=none
	fsck.fat -n "$T/esp" > /dev/null || fail "ESP of $img does not pass fsck.fat -n"
	e2fsck -fn "$T/root" > /dev/null 2>&1 || fail "root of $img does not pass e2fsck -fn"
	[ "$(MTOOLS_SKIP_CHECK=1 mtype -i "$T/esp" ::/hello.txt)" = "hello from the tree" ] \
		|| fail "hello.txt missing from the ESP of $img"
	[ "$(debugfs -R 'cat /etc/app.conf' "$T/root" 2>/dev/null)" = "option = 1" ] \
		|| fail "etc/app.conf missing from the root of $img"
done
note "example: partitioned, formatted and filled as uid 65534; fsck clean as root"
