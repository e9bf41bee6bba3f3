# tests/prefix.sh: sourced by check.sh, demo.sh and bench.sh.  Builds loopfd
# with every path inside a fresh temp root and installs it there, the helper
# setuid root, so nothing outside the temp root is touched.
# Sets and exports LOOPFD_T PREFIX LOOPFD_CONF LOOPFD_RUN BUILD.
#   install_temp_prefix NAME [MAKE-TARGET...]   extra targets are built too
#                                               (check and bench: test-programs)

require_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "$1: must run as root (real loop devices, a setuid helper, uid 65534 clients)" >&2
		exit 1
	fi
}

install_temp_prefix() {
	LOOPFD_T=$(mktemp -d /tmp/loopfd-$1.XXXXXX)
	chmod 0755 "$LOOPFD_T"
	export LOOPFD_T
	export PREFIX=$LOOPFD_T/prefix
	export LOOPFD_CONF=$LOOPFD_T/etc/loopfd.conf
	export LOOPFD_RUN=$LOOPFD_T/run
	export BUILD=$LOOPFD_T/build
	mkdir -p "$LOOPFD_T/etc"
	local vars=(O="$BUILD" PREFIX="$PREFIX" SYSCONFDIR="$LOOPFD_T/etc" RUNSTATEDIR="$LOOPFD_RUN")
	make -s "${vars[@]}" all "${@:2}" >/dev/null &&
	make -s "${vars[@]}" install >/dev/null
}
