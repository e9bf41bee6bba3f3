#!/usr/bin/env bash
# The root-owned policy file: who may use loopfd, how many devices, and a
# refusal to serve, naming the file and the problem, when it is not safe.
. "$(dirname "$0")/../lib.sh"

mkimage "$T/img" 4
for i in 1 2 3; do mkimage "$T/i$i.img" 1; done

expect_refusal() {	# expect_refusal WHAT PATTERN
	if as_nobody "$LOOPFD" run "$T/img" -- true 2> "$T/err"; then
		fail "$1: served anyway"
	fi
	grep -q "$LOOPFD_CONF" "$T/err" || fail "$1: message does not name the file: $(cat "$T/err")"
	grep -q "$2" "$T/err" || fail "$1: message lacks '$2': $(cat "$T/err")"
	assert_no_device_for "$T/img"
}

write_config "allow-users root"
expect_refusal "user not listed" "not allowed"

write_config "allow-users nobody"
as_nobody "$LOOPFD" run "$T/img" -- true || fail "listed user refused"
write_config "allow-groups nogroup"
as_nobody "$LOOPFD" run "$T/img" -- true || fail "member of a listed group refused"

write_config "allow-grant yes"
chown $NOBODY "$LOOPFD_CONF"
expect_refusal "config owned by uid 65534" "must be owned by root"

write_config "allow-grant yes"
chmod 0664 "$LOOPFD_CONF"
expect_refusal "group-writable config" "writable"

write_config "allow-grant yes"
chmod 0602 "$LOOPFD_CONF"
expect_refusal "world-writable config" "writable"

write_config "alow-grant yes"
expect_refusal "typo in a keyword" "unknown keyword 'alow-grant'"

# A policy the caller cannot read: its parse error must not quote it to the
# caller (nor to the setuid helper's stderr, which is the caller's); root
# gets the words from --check-config.
write_config "allow-users secret-word-8231"
chmod 0600 "$LOOPFD_CONF"
expect_refusal "root-only config with an unknown user" "is not a valid policy file"
if grep -q "secret-word-8231" "$T/err"; then
	fail "a root-only policy was quoted to the caller: $(cat "$T/err")"
fi
"$HELPER" --check-config > "$T/check" 2>&1 && fail "--check-config passed an invalid policy"
grep -q "unknown user 'secret-word-8231'" "$T/check" || fail "--check-config: $(cat "$T/check")"
# The same file readable by all: the caller may see the problem itself.
chmod 0644 "$LOOPFD_CONF"
expect_refusal "readable config with an unknown user" "unknown user 'secret-word-8231'"

# The directories above it count: one the caller could write to means a
# policy (or its absence) anyone could have chosen.  Sticky (/tmp) is fine.
remove_config
confdir=$(dirname "$LOOPFD_CONF")
chmod 0777 "$confdir"
expect_refusal "missing config in a world-writable directory" "directory $confdir"
chmod 01777 "$confdir"
as_nobody "$LOOPFD" run "$T/img" -- true || fail "config directory 01777 (sticky) refused"
chmod 0755 "$confdir"
"$HELPER" --check-config | grep -q "missing: the defaults" || fail "--check-config without a file"

write_config "allow-grant yes"
chmod 0000 "$LOOPFD_CONF"
mv "$LOOPFD_CONF" "$LOOPFD_CONF.real"; mkdir "$LOOPFD_CONF"
expect_refusal "config is a directory" "not a regular file"
rmdir "$LOOPFD_CONF"; mv "$LOOPFD_CONF.real" "$LOOPFD_CONF"; chmod 0644 "$LOOPFD_CONF"

# Per-user limit: 2 devices; the third attach in one run fails clearly.
write_config "max-devices-per-user 2"
if as_nobody "$LOOPFD" run "$T/i1.img" "$T/i2.img" "$T/i3.img" -- true 2> "$T/err"; then
	fail "third device attached past a per-user limit of 2"
fi
grep -q "per-user limit" "$T/err" || fail "no per-user limit message: $(cat "$T/err")"
grep -q "$T/i3.img" "$T/err" || fail "limit message does not name the image: $(cat "$T/err")"
for i in 1 2 3; do assert_no_device_for "$T/i$i.img"; done

# The limit holds across concurrent sessions, and frees itself when a
# session dies by SIGKILL.
as_nobody "$LOOPFD" run "$T/i1.img" "$T/i2.img" -- sh -c 'echo $PPID > "$1/held"; exec sleep 31.5' sh "$T" &
holder=$!
remember_pid $holder
wait_until 10 test -s "$T/held" || fail "holder did not start"
if as_nobody "$LOOPFD" run "$T/i3.img" -- true 2> "$T/err"; then
	fail "limit not enforced across sessions"
fi
grep -q "per-user limit" "$T/err" || fail "cross-session limit message: $(cat "$T/err")"
# root is another user: unaffected.
"$LOOPFD" run "$T/i3.img" -- true || fail "another user was affected by uid 65534's limit"
kill -KILL "$(cat "$T/held")"		# the client itself
pkill -KILL -u $NOBODY -xf "sleep 31.5" || true	# its COMMAND, holding the fds
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/i1.img')\$(losetup -j '$T/i2.img')\" ]" \
	|| fail "killed session's devices not released"
as_nobody "$LOOPFD" run "$T/i3.img" -- true 2> "$T/err" || { cat "$T/err"; fail "slots not freed after SIGKILL"; }

# The same slots are counted whatever the mode: with 2 devices held through
# setuid sessions, a daemon-mode attach by the same user is refused too.  And
# killing the helper (root can) keeps its slots until its devices are gone.
"$HELPER" --listen "$T/sock" 2> "$T/daemon.log" &
remember_pid $!
wait_until 5 test -S "$T/sock" || fail "daemon did not start"
rm -f "$T/held"
as_nobody "$LOOPFD" run "$T/i1.img" "$T/i2.img" -- sh -c 'echo $PPID > "$1/held"; exec sleep 31.5' sh "$T" &
holder=$!
remember_pid $holder
wait_until 10 test -s "$T/held" || fail "holder did not start"
if as_nobody "$LOOPFD" run --socket "$T/sock" "$T/i3.img" -- true 2> "$T/err"; then
	fail "per-user limit not enforced across setuid and daemon modes"
fi
grep -q "per-user limit" "$T/err" || fail "cross-mode limit message: $(cat "$T/err")"
# Root kills the session process: its guard keeps the slots while the
# devices stay attached through the COMMAND's fds (before the guard, a
# killed helper let the user attach past its limit).
pkill -KILL -P "$(cat "$T/held")" -x loopfd-helper || fail "no setuid helper to kill"
sleep 1.5
if as_nobody "$LOOPFD" run --socket "$T/sock" "$T/i3.img" -- true 2> "$T/err"; then
	fail "slots of a SIGKILLed helper freed while its devices were still attached"
fi
grep -q "per-user limit" "$T/err" || fail "limit after the helper's death: $(cat "$T/err")"
pkill -KILL -u $NOBODY -xf "sleep 31.5" || true
wait "$holder" 2>/dev/null || true
# Devices of the killed helper had AUTOCLEAR: gone once their last opener is;
# the guard sees it and frees the slots.
wait_until 15 sh -c "[ -z \"\$(losetup -j '$T/i1.img')\$(losetup -j '$T/i2.img')\" ]" \
	|| fail "devices of a killed helper not detached after their holder exited"
wait_until 10 sh -c "as_nobody() { setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups -- \"\$@\"; }; as_nobody '$LOOPFD' run --socket '$T/sock' '$T/i3.img' -- true 2>/dev/null" \
	|| fail "slots of a SIGKILLed helper not freed after its devices detached"

# A system-wide limit: one device for everyone; root is refused while uid
# 65534 holds it, with a message saying which limit.
write_config "max-devices-per-user 1
max-devices 1"
rm -f "$T/held"
as_nobody "$LOOPFD" run "$T/i1.img" -- sh -c 'echo $PPID > "$1/held"; exec sleep 31.5' sh "$T" &
holder=$!
remember_pid $holder
wait_until 10 test -s "$T/held" || fail "holder did not start"
if "$LOOPFD" run "$T/i2.img" -- true 2> "$T/err"; then
	fail "system-wide limit of 1 not enforced"
fi
grep -q "system-wide limit" "$T/err" || fail "global limit message: $(cat "$T/err")"
pkill -KILL -u $NOBODY -xf "sleep 31.5" || true
set +e; wait "$holder"; rc=$?; set -e
[ $rc = 137 ] || fail "holder session: status $rc, want 137 (its COMMAND was SIGKILLed)"
"$LOOPFD" run "$T/i2.img" -- true || fail "global slot not freed after the holder finished"

# A missing file means the defaults.
remove_config
as_nobody "$LOOPFD" run "$T/img" -- true || fail "defaults refused"
note "policy: users/groups, unsafe files refused by name, per-user limit across sessions"
