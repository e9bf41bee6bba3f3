# tests/units.sh: sourced by tests that run the helper the way the shipped
# systemd units do, from the units' own text (as installed by make install
# into $PREFIX), not from a copy.  PID 1 here is not systemd, so each
# sandboxing directive is applied by an equivalent: namespaces and mounts
# by unshare(1) and mount(8), capabilities and no_new_privs by setpriv(1).
# A directive without an equivalent here fails the test: nothing ships
# untested.

UNITDIR=$PREFIX/lib/systemd/system

# unit_value FILE KEY: the last KEY= in FILE ("" if none).
unit_value() {
	sed -n "s/^$2=//p" "$1" | tail -n 1
}

# unit_sandbox SERVICE: sets SANDBOX (a command prefix) from SERVICE's
# directives.  The test prefix under /tmp stands in for /usr, /etc and
# /run: PrivateTmp= mounts a new /tmp but binds $LOOPFD_T back into it.
unit_sandbox() {
	local unit=$1 key val setup="set -e; " ns=() caps=() nnp=() umask_=022 m
	local rw=()
	while IFS='=' read -r key val; do
		case "$key=$val" in
		\#* | "=" | "["*) continue ;;
		ExecStart=*) ;;	# unit_exec
		CapabilityBoundingSet=*)
			caps=(--bounding-set="-all$(for c in $val; do
				c=${c#CAP_}; printf ',+%s' "${c,,}"; done)") ;;
		AmbientCapabilities=) ;;	# empty: none
		NoNewPrivileges=yes) nnp=(--no-new-privs) ;;
		ProtectSystem=strict)
			# every mount read-only but /dev, /proc and /sys
			setup+='findmnt -rno TARGET | while read -r m; do
				case $m in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue;; esac
				mount -o remount,bind,ro "$m" 2>/dev/null || mount -o remount,ro "$m"
			done; ' ;;
		ProtectHome=yes)
			for m in /home /root /run/user; do
				[ -d "$m" ] && setup+="mount -t tmpfs -o ro,mode=000 tmpfs $m; "
			done ;;
		PrivateTmp=yes)
			# (the variable's value is pasted: systemd-socket-activate
			# passes no environment on; mount -c: a canonicalized
			# /proc/self/fd/9 would name the new, empty directory)
			setup+="exec 9< '$LOOPFD_T'; mount -t tmpfs -o mode=1777 tmpfs /tmp;
				mount -t tmpfs -o mode=1777 tmpfs /var/tmp;
				mkdir -p '$LOOPFD_T'; mount -c --rbind /proc/self/fd/9 '$LOOPFD_T'; exec 9<&-; " ;;
		RuntimeDirectory=*) rw+=("/run/$val") ;;
		ReadWritePaths=*) rw+=($val) ;;
		RuntimeDirectoryPreserve=yes) ;;	# a stop removes nothing: no effect here
		KillMode=process) ;;	# what a stop kills: no stop here (t_daemon: SIGTERM)
		ProtectKernelTunables=yes)
			setup+='mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys;
				mount -o remount,bind,ro /sys; ' ;;
		ProtectControlGroups=yes)
			setup+='mount -o remount,bind,ro /sys/fs/cgroup; ' ;;
		ProtectHostname=yes) ns+=(--uts) ;;
		PrivateIPC=yes) ns+=(--ipc) ;;
		PrivateNetwork=yes) ns+=(--net) ;;
		# Covered by stronger rules the helper loads itself (its seccomp
		# filter kills socket() and any non-native syscall entry), which
		# t_seccomp.sh tests.
		RestrictAddressFamilies=AF_UNIX | SystemCallArchitectures=native) ;;
		UMask=*) umask_=$val ;;
		*) fail "$unit: no test equivalent for '$key=$val' (tests/units.sh)" ;;
		esac
	done < <(sed -n '/^\[Service\]/,/^\[/p' "$unit" | grep -v '^\[')
	for m in "${rw[@]}"; do
		mkdir -p "$m"
		setup+="mount --bind '$m' '$m'; mount -o remount,bind,rw '$m'; "
	done
	setup+="umask $umask_; exec setpriv ${nnp[*]} ${caps[*]} -- \"\$@\""
	SANDBOX=(unshare --mount --propagation private "${ns[@]}" -- sh -c "$setup" sh)
}

# unit_exec SERVICE: the ExecStart= command line of SERVICE, as words.
unit_exec() {
	read -r -a EXEC <<< "$(unit_value "$1" ExecStart)"
}
