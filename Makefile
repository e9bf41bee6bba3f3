# loopfd: build, install, test.
#
#   make                      build the product into $(O) (default: build/):
#                             loopfd, loopfd-helper, libloopfd.{a,so}, loopfd.pc
#   make install              installs what `make` built; never compiles
#                             (NO_SETUID=1: no setuid bit even as root).
#                             PREFIX, SYSCONFDIR, RUNSTATEDIR, DESTDIR respected
#                             (PYTHON=python3: the Python client too, install-python)
#   make check                unit + integration + hostile + fuzz smoke (as root)
#   make demo                 the quick-start job, as uid 65534 on a scratch image
#   make deb-check            the Debian packages built, linted, installed, used, purged
#   make cross-check          arm64 cross-build (and .debs), checked hardened
#   make deps                 install missing Debian packages (apt-get)
#   make test-programs        the probes and clients the tests and bench use
#   make bench                benchmarks (not part of check)
#   make fuzz FUZZ_SECONDS=N  libFuzzer over the decoder
#   make analyze              cppcheck + clang-tidy
#   make asan                 build and run the unit tests under ASan/UBSan
#
# Build flags: CFLAGS, CPPFLAGS and LDFLAGS from the environment or the
# command line are used as given and come last; a hardening flag is added
# only when they do not already choose it.  WERROR=1 turns warnings into
# errors (make check and CI set it; a distribution's newer compiler must not
# fail the build on a new warning).  STATIC=1 (default) links both programs
# as static PIEs, STATIC=0 dynamically (SECURITY.md: "Static or dynamic").
#
# Paths are compiled in: changing PREFIX, SYSCONFDIR or RUNSTATEDIR rebuilds.

PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
LIBEXECDIR  ?= $(PREFIX)/libexec
INCLUDEDIR  ?= $(PREFIX)/include
LIBDIR      ?= $(PREFIX)/lib
SYSCONFDIR  ?= $(PREFIX)/etc
DATADIR     ?= $(PREFIX)/share
MANDIR      ?= $(DATADIR)/man
DOCDIR      ?= $(DATADIR)/doc/loopfd
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
RUNSTATEDIR ?= /run/loopfd
DESTDIR     ?=
O           ?= build
VERSION     := 1.0.0
STATIC      ?= 1
WERROR      ?= 0

CC      ?= cc
CLANG   ?= clang
CFLAGS  ?= -O2 -g

# Hardening, each flag only where the caller's flags do not already decide
# it (dpkg-buildflags passes -D_FORTIFY_SOURCE=2: defining it twice is an
# error under -Werror).  -U first: some compilers predefine it.  Control
# flow protection is per architecture: CET on x86, BTI+PAC on arm64.
given    = $(findstring $(1),$(CPPFLAGS) $(CFLAGS))
TARGET_MACHINE := $(shell $(CC) -dumpmachine 2>/dev/null)
IS_X86   := $(filter x86_64-% i386-% i486-% i586-% i686-%,$(TARGET_MACHINE))
IS_ARM64 := $(filter aarch64-%,$(TARGET_MACHINE))
HARDEN_CPP := $(if $(call given,_FORTIFY_SOURCE),,-U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3)
HARDEN  := $(if $(call given,-fstack-protector),,-fstack-protector-strong) \
           $(if $(call given,-fstack-clash-protection),,-fstack-clash-protection) \
           $(if $(IS_X86),$(if $(call given,-fcf-protection),,-fcf-protection)) \
           $(if $(IS_ARM64),$(if $(call given,-mbranch-protection),,-mbranch-protection=standard))
WARN    := -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wno-unused-parameter $(if $(filter 1,$(WERROR)),-Werror)
CPPFLAGS_ALL := -D_GNU_SOURCE -I$(O) -Iprotocol -Isandbox -Ihelper -Iclient $(HARDEN_CPP) $(CPPFLAGS)
CFLAGS_ALL   := -std=gnu11 $(WARN) $(HARDEN) $(CFLAGS)
LDFLAGS_ALL  := -Wl,-z,relro,-z,now -Wl,--as-needed $(LDFLAGS)
# Programs: static PIE or dynamic PIE (STATIC=0).
PROG_LINK := $(if $(filter 1,$(STATIC)),-static-pie,-pie)

PROTO_SRC   := $(wildcard protocol/*.c)
# sandbox/seccomp_policy.c is a build tool: it compiles the seccomp rules
# into $(O)/seccomp_filters.h, which sandbox/seccomp.c loads.
SECCOMP_POLICY := sandbox/seccomp_policy.c
SANDBOX_SRC := $(filter-out $(SECCOMP_POLICY),$(wildcard sandbox/*.c))
HELPER_SRC  := $(wildcard helper/*.c)
# One line per source file: add a client/ source with `LIB_SRC += ...`
# (the library, also linked into the CLI) or `CLI_SRC += ...` (the command).
LIB_SRC     := client/libloopfd.c
LIB_SRC     += client/partitions.c
CLI_SRC     := client/cli.c client/command.c client/hold.c client/report.c

objs = $(patsubst %.c,$(O)/%.o,$(1))
pics = $(patsubst %.c,$(O)/pic/%.o,$(1))

HELPER   := $(O)/loopfd-helper
CLI      := $(O)/loopfd
LIB_A    := $(O)/libloopfd.a
LIB_SO   := $(O)/libloopfd.so.1
PC       := $(O)/loopfd.pc
# Man pages (and, below, other text files) with the paths filled in.
MAN_PAGES := $(patsubst %.in,$(O)/%,$(wildcard man/*.in))
UNITS    := $(patsubst %.in,$(O)/%,$(wildcard systemd/*.in))
PRODUCT  := $(HELPER) $(CLI) $(LIB_A) $(LIB_SO) $(PC) $(MAN_PAGES) $(UNITS)

.PHONY: all install install-python uninstall check unit integration hostile fuzz-smoke fuzz \
        demo deb-check cross-check deps bench analyze asan asan-cli clean test-programs installable

all: $(PRODUCT)

# Compiled-in paths.  $(O)/paths.stamp holds the values the build was made
# with; it is remade only when they differ from this invocation's, so that
# paths.h and loopfd.pc (and every object using a path) are rebuilt then and
# only then, and an unchanged tree rebuilds nothing.  `make install` compares
# the same values to refuse installing a build made for other paths.
PATHS := $(VERSION)|$(SECCOMP_ARCH)|$(PREFIX)|$(BINDIR)|$(LIBEXECDIR)|$(SYSCONFDIR)|$(RUNSTATEDIR)|$(LIBDIR)|$(INCLUDEDIR)|$(DOCDIR)
BUILT_PATHS := $(file <$(O)/paths.stamp)
ifneq ($(PATHS),$(BUILT_PATHS))
.PHONY: $(O)/paths.stamp
endif
$(O)/paths.stamp:
	@mkdir -p $(O)
	@printf '%s\n' '$(PATHS)' > $@

$(O)/paths.h: $(O)/paths.stamp
	@printf '#define LOOPFD_VERSION "%s"\n#define LOOPFD_HELPER_PATH "%s"\n#define LOOPFD_CONFIG_PATH "%s"\n#define LOOPFD_RUNDIR "%s"\n' \
		'$(VERSION)' '$(LIBEXECDIR)/loopfd-helper' '$(SYSCONFDIR)/loopfd.conf' \
		'$(RUNSTATEDIR)' > $@.tmp
	@mv $@.tmp $@

# The helper's seccomp programs, compiled from the policy by libseccomp on
# the build machine (so the helper needs no rule compiler at run time).
# The generator always runs here, built by the build machine's compiler
# with its libseccomp; it emits programs for SECCOMP_ARCH, the architecture
# $(CC) compiles for (x86_64, aarch64), so a cross build needs no target
# libseccomp at all.  (seccomp.h: a libseccomp upgrade regenerates them.)
CC_FOR_BUILD       ?= cc
CFLAGS_FOR_BUILD   ?= -O2 -g
SECCOMP_ARCH       ?= $(firstword $(subst -, ,$(TARGET_MACHINE)))
$(O)/seccomp_policy: $(SECCOMP_POLICY) $(wildcard /usr/include/seccomp.h)
	@mkdir -p $(O)
	$(CC_FOR_BUILD) -D_GNU_SOURCE -std=gnu11 $(WARN) $(CPPFLAGS_FOR_BUILD) \
		$(CFLAGS_FOR_BUILD) $(LDFLAGS_FOR_BUILD) $< -lseccomp -o $@

$(O)/seccomp_filters.h: $(O)/seccomp_policy $(O)/paths.stamp
	$< $(SECCOMP_ARCH) > $@.tmp && mv $@.tmp $@

$(O)/sandbox/seccomp.o: $(O)/seccomp_filters.h

# Header dependencies from the compiler (-MMD): an object is rebuilt when a
# header it includes changes, and only then.
DEPFLAGS = -MMD -MP
-include $(shell find $(O) -name '*.d' 2>/dev/null)

$(O)/%.o: %.c $(O)/paths.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) $(DEPFLAGS) -fPIE -c $< -o $@

$(O)/pic/%.o: %.c $(O)/paths.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) $(DEPFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

# The helper: static PIE by default (STATIC=1).  SECURITY.md, "Static or
# dynamic", has the measured start-up cost of each and the reason.
$(HELPER): $(call objs,$(HELPER_SRC) $(SANDBOX_SRC) $(PROTO_SRC))
	$(CC) $(CFLAGS_ALL) $(PROG_LINK) $(LDFLAGS_ALL) $^ -lcap -o $@

$(LIB_A): $(call objs,$(LIB_SRC) $(PROTO_SRC))
	rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(call pics,$(LIB_SRC) $(PROTO_SRC))
	$(CC) $(CFLAGS_ALL) -shared $(LDFLAGS_ALL) -Wl,-soname,libloopfd.so.1 $^ -lblkid -o $@
	ln -sf libloopfd.so.1 $(O)/libloopfd.so

# The CLI links libloopfd statically in either case: `loopfd run` starts
# three programs where losetup starts two, and a static exec saves the
# dynamic loader's work.
CLI_LINK ?= $(PROG_LINK)
$(CLI): $(call objs,$(CLI_SRC)) $(LIB_A)
	$(CC) $(CFLAGS_ALL) $(CLI_LINK) $(LDFLAGS_ALL) $^ -lblkid -o $@

# @NAME@ in a .in file becomes the path (or version) this build is for.
SUBST = sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@PREFIX@|$(PREFIX)|g' \
	-e 's|@BINDIR@|$(BINDIR)|g' -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' \
	-e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@RUNSTATEDIR@|$(RUNSTATEDIR)|g' \
	-e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	-e 's|@DOCDIR@|$(DOCDIR)|g'

$(PC): client/loopfd.pc.in $(O)/paths.stamp
	@mkdir -p $(dir $@)
	@$(SUBST) $< > $@.tmp && mv $@.tmp $@

# The systemd services: the shared sandbox (systemd/sandbox.conf) pasted in
# at @SANDBOX@; the state directory as systemd's RuntimeDirectory= when it
# lies in /run, else as a writable path.
UNIT_STATEDIR := $(if $(filter /run/%,$(RUNSTATEDIR)),RuntimeDirectory=$(RUNSTATEDIR:/run/%=%),ReadWritePaths=$(RUNSTATEDIR))
$(UNITS): systemd/sandbox.conf

$(O)/%: %.in $(O)/paths.stamp
	@mkdir -p $(dir $@)
	@sed -e '/^@SANDBOX@$$/{r systemd/sandbox.conf' -e 'd;}' $< | $(SUBST) \
		-e 's|@UNIT_STATEDIR@|$(UNIT_STATEDIR)|g' > $@.tmp && mv $@.tmp $@

# ---- test programs (built with the same flags; not installed) -------------
TEST_PROGS := $(O)/tests/seccomp_probe $(O)/tests/hostile_exec $(O)/tests/marker_preload.so \
              $(O)/tests/devctl $(O)/tests/without_syscall $(O)/tests/tinyfuse \
              $(O)/tests/grabber \
              $(if $(wildcard tests/hostile/rawclient.c),$(O)/tests/rawclient) \
              $(if $(wildcard bench/bench.c),$(O)/tests/bench)

test-programs: $(TEST_PROGS)

$(O)/tests/seccomp_probe: $(O)/tests/sandbox/seccomp_probe.o $(call objs,$(SANDBOX_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -lcap -o $@

$(O)/tests/hostile_exec: $(O)/tests/sandbox/hostile_exec.o $(call objs,$(PROTO_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -o $@

$(O)/tests/devctl: $(O)/tests/sandbox/devctl.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -o $@

$(O)/tests/tinyfuse: $(O)/tests/sandbox/tinyfuse.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -o $@

$(O)/tests/grabber: $(O)/tests/sandbox/grabber.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -o $@

$(O)/tests/without_syscall: $(O)/tests/sandbox/without_syscall.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -lseccomp -o $@

$(O)/tests/marker_preload.so: tests/sandbox/marker_preload.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fPIC -shared $(LDFLAGS_ALL) $< -o $@

$(O)/tests/rawclient: $(O)/tests/hostile/rawclient.o $(call objs,$(PROTO_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -o $@

$(O)/tests/bench: $(O)/bench/bench.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -o $@

# ---- unit tests (cmocka) ---------------------------------------------------
UNIT_TESTS := $(O)/tests/test_proto $(O)/tests/test_config $(O)/tests/test_kernel

$(O)/tests/test_proto: $(O)/tests/unit/test_proto.o $(call objs,$(PROTO_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -lcmocka -o $@

$(O)/tests/test_config: $(O)/tests/unit/test_config.o $(O)/helper/config.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -lcmocka -o $@

$(O)/tests/test_kernel: $(O)/tests/unit/test_kernel.o $(O)/helper/kernel.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -lcmocka -o $@

unit: $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== $$t"; $$t || exit 1; done

# ---- install ---------------------------------------------------------------
# Installs what `make` built and never builds: `sudo make install` must not
# compile as root in the user's tree.  Run with the same path variables as
# the build (they are compiled in).
installable:
	@for f in $(PRODUCT); do \
		[ -e "$$f" ] || { echo "make install: $$f is missing: run 'make' first (as yourself, with the same PREFIX, SYSCONFDIR, RUNSTATEDIR, O)" >&2; exit 1; }; \
	done
	@[ '$(PATHS)' = '$(BUILT_PATHS)' ] || { \
		echo "make install: $(O) was built for '$(BUILT_PATHS)'," >&2; \
		echo "  this install is for '$(PATHS)' (VERSION|SECCOMP_ARCH|PREFIX|BINDIR|LIBEXECDIR|SYSCONFDIR|RUNSTATEDIR|LIBDIR|INCLUDEDIR|DOCDIR);" >&2; \
		echo "  run 'make' with the same variables first" >&2; exit 1; }

install: installable $(if $(PYTHON),install-python)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(INCLUDEDIR) \
	           $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 0755 $(CLI) $(DESTDIR)$(BINDIR)/loopfd
	install -m 0755 $(HELPER) $(DESTDIR)$(LIBEXECDIR)/loopfd-helper
	@if [ "$$(id -u)" = 0 ] && [ -z "$(NO_SETUID)" ]; then \
		chown root:root $(DESTDIR)$(LIBEXECDIR)/loopfd-helper && \
		chmod 4755 $(DESTDIR)$(LIBEXECDIR)/loopfd-helper; \
	else echo "$(LIBEXECDIR)/loopfd-helper installed without setuid"; fi
	install -m 0644 client/loopfd.h $(DESTDIR)$(INCLUDEDIR)/loopfd.h
	install -m 0644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libloopfd.a
	install -m 0755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/libloopfd.so.1
	ln -sf libloopfd.so.1 $(DESTDIR)$(LIBDIR)/libloopfd.so
	install -m 0644 $(PC) $(DESTDIR)$(LIBDIR)/pkgconfig/loopfd.pc
	for p in $(MAN_PAGES); do s=$${p##*.}; \
		install -d $(DESTDIR)$(MANDIR)/man$$s && \
		install -m 0644 $$p $(DESTDIR)$(MANDIR)/man$$s/ || exit 1; done
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(DOCDIR)/examples \
	           $(DESTDIR)$(BASHCOMPDIR)
	install -m 0644 $(UNITS) $(DESTDIR)$(SYSTEMDUNITDIR)/
	install -m 0644 etc/loopfd.conf $(DESTDIR)$(DOCDIR)/examples/loopfd.conf
	install -m 0644 completion/loopfd $(DESTDIR)$(BASHCOMPDIR)/loopfd

# The Python client (python/), into $(PYTHON)'s directory for PREFIX
# (python/install_dir.py; PYTHONDIR= overrides), its helper path and version
# written into _paths.py as paths.h has them for the C client.
install-python:
	@dir='$(PYTHONDIR)'; [ -n "$$dir" ] || \
	    dir=$$($(or $(PYTHON),python3) python/install_dir.py '$(PREFIX)') || exit 1; \
	install -d "$(DESTDIR)$$dir/loopfd" && \
	install -m 0644 python/loopfd/*.py python/loopfd/py.typed "$(DESTDIR)$$dir/loopfd/" && \
	printf '"""Paths compiled in by make install-python."""\n\nVERSION = "%s"\nHELPER_PATH = "%s"\n' \
	    '$(VERSION)' '$(LIBEXECDIR)/loopfd-helper' > "$(DESTDIR)$$dir/loopfd/_paths.py" && \
	echo "python: loopfd installed in $(DESTDIR)$$dir"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/loopfd $(DESTDIR)$(LIBEXECDIR)/loopfd-helper \
	      $(DESTDIR)$(INCLUDEDIR)/loopfd.h $(DESTDIR)$(LIBDIR)/libloopfd.* \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/loopfd.pc \
	      $(foreach p,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))/$(notdir $(p))) \
	      $(foreach u,$(UNITS),$(DESTDIR)$(SYSTEMDUNITDIR)/$(notdir $(u))) \
	      $(DESTDIR)$(DOCDIR)/examples/loopfd.conf $(DESTDIR)$(BASHCOMPDIR)/loopfd

# ---- the README's two commands ---------------------------------------------
deps:
	@tests/deps.sh

check: deps
	@tests/check.sh

demo: deps
	@tests/demo.sh

# The Debian packages built, linted, installed, used and purged (as root).
deb-check: deps
	@tests/deb-check.sh

# arm64 cross-build with Debian's cross compiler; binaries checked hardened.
cross-check: deps
	@tests/cross-check.sh

bench: deps
	@bench/bench.sh

# ---- fuzzing ---------------------------------------------------------------
FUZZ_SECONDS ?= 60
FUZZ := $(O)/fuzz/fuzz_decode

$(FUZZ): tests/fuzz/fuzz_decode.c $(PROTO_SRC) protocol/loopfd_proto.h
	@mkdir -p $(dir $@)
	$(CLANG) -std=gnu11 -g -O1 -D_GNU_SOURCE -Iprotocol \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		tests/fuzz/fuzz_decode.c $(PROTO_SRC) -o $@

fuzz: $(FUZZ)
	@mkdir -p $(O)/fuzz/corpus
	$(FUZZ) -max_total_time=$(FUZZ_SECONDS) -max_len=$$((16408+64)) \
		$(O)/fuzz/corpus tests/fuzz/corpus

fuzz-smoke: $(FUZZ)
	$(FUZZ) -runs=0 tests/fuzz/corpus
	@mkdir -p $(O)/fuzz/smoke
	$(FUZZ) -max_total_time=$(FUZZ_SECONDS) -max_len=$$((16408+64)) \
		$(O)/fuzz/smoke tests/fuzz/corpus

# ---- static analysis and sanitizers ----------------------------------------
ALL_SRC = $(PROTO_SRC) $(SANDBOX_SRC) $(SECCOMP_POLICY) $(HELPER_SRC) $(LIB_SRC) $(CLI_SRC)

analyze: $(O)/paths.h $(O)/seccomp_filters.h
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
		--inline-suppr --std=c11 -D_GNU_SOURCE -D__$(SECCOMP_ARCH)__ -I$(O) -Iprotocol -Isandbox \
		-Ihelper -Iclient --suppress=missingIncludeSystem $(ALL_SRC)
	@# valist.Uninitialized: clang-tidy 14 flags every va_start'ed list passed
	@# to vsnprintf as uninitialized (a known false positive of that release).
	clang-tidy --quiet --warnings-as-errors='*' \
		--checks='-*,clang-analyzer-*,bugprone-*,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-bugprone-assignment-in-if-condition,-bugprone-narrowing-conversions,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-clang-analyzer-valist.Uninitialized' \
		$(ALL_SRC) -- $(CPPFLAGS_ALL) -std=gnu11

# Unit tests, and the loopfd CLI with libloopfd, under ASan/UBSan (the CLI is
# also run through integration tests by check.sh; the setuid helper is a
# static PIE and cannot carry the sanitizers' runtime).
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
asan:
	$(MAKE) O=build-asan CC=clang CFLAGS='$(ASAN_FLAGS)' unit

asan-cli:
	$(MAKE) CC=clang CFLAGS='$(ASAN_FLAGS)' CLI_LINK=-pie $(O)/loopfd

clean:
	rm -rf build build-asan $(O)
