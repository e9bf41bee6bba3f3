#!/usr/bin/env bash
# Many clients at once, racing each other and a `losetup -f` loop for free
# devices (LOOP_CTL_GET_FREE reserves nothing): all succeed, all data lands.
. "$(dirname "$0")/../lib.sh"

CLIENTS=8
ROUNDS=4
mkimage "$T/racer.img" 1
for i in $(seq $CLIENTS); do
	mkimage "$T/c$i.img" 4
	head -c $((1 << 20)) /dev/urandom > "$T/d$i"
	chmod 0644 "$T/d$i"
done

# The competitor: grabs and frees free devices as fast as it can, on an
# image of ours, so the cleanup trap can detach whatever it leaves.
(
	while [ ! -e "$T/stop" ]; do
		dev=$(losetup -f --show "$T/racer.img" 2>/dev/null) && losetup -d "$dev"
	done
) &
remember_pid $!

pids=()
for i in $(seq $CLIENTS); do
	(
		for r in $(seq $ROUNDS); do
			as_nobody "$LOOPFD" run "$T/c$i.img" -- sh -c 'cat "$1" >&3' sh "$T/d$i" \
				2>> "$T/err$i" || exit 1
			cmp -n $((1 << 20)) "$T/d$i" "$T/c$i.img" || exit 2
		done
	) &
	pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
	wait "${pids[$i]}" || { failed=$((failed + 1)); cat "$T/err$((i + 1))" >&2; }
done
touch "$T/stop"
wait_until 10 sh -c "[ -z \"\$(losetup -j '$T/racer.img')\" ]" || true
[ $failed = 0 ] || fail "$failed of $CLIENTS clients failed"
for i in $(seq $CLIENTS); do assert_no_device_for "$T/c$i.img"; done
note "$CLIENTS clients x $ROUNDS rounds against a losetup -f loop: all succeeded"
