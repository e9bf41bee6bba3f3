# loopfd: build, install, test.
#
#   make                      build into $(O) (default: build/)
#   make install              PREFIX, SYSCONFDIR, RUNSTATEDIR, DESTDIR respected
#   make check                unit + integration + hostile + fuzz smoke (as root)
#   make demo                 the quick-start job, as uid 65534 on a scratch image
#   make deps                 install missing Debian packages (apt-get)
#   make bench                benchmarks (not part of check)
#   make fuzz FUZZ_SECONDS=N  libFuzzer over the decoder
#   make analyze              cppcheck + clang-tidy
#   make asan                 build and run the unit tests under ASan/UBSan
#
# Paths are compiled in: changing PREFIX, SYSCONFDIR or RUNSTATEDIR rebuilds.

PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
LIBEXECDIR  ?= $(PREFIX)/libexec
INCLUDEDIR  ?= $(PREFIX)/include
LIBDIR      ?= $(PREFIX)/lib
SYSCONFDIR  ?= $(PREFIX)/etc
RUNSTATEDIR ?= /run/loopfd
DESTDIR     ?=
O           ?= build
VERSION     := 1.0.0

CC      ?= cc
CLANG   ?= clang
HARDEN  := -D_FORTIFY_SOURCE=3 -fstack-protector-strong -fstack-clash-protection \
           -fcf-protection
WARN    := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
CPPFLAGS_ALL := -D_GNU_SOURCE -I$(O) -Iprotocol -Isandbox -Ihelper -Iclient
CFLAGS_ALL   := -std=gnu11 $(WARN) $(HARDEN) $(CFLAGS)
LDFLAGS_ALL  := -Wl,-z,relro,-z,now -Wl,--as-needed $(LDFLAGS)

PROTO_SRC   := $(wildcard protocol/*.c)
# sandbox/seccomp_policy.c is a build tool: it compiles the seccomp rules
# into $(O)/seccomp_filters.h, which sandbox/seccomp.c loads.
SECCOMP_POLICY := sandbox/seccomp_policy.c
SANDBOX_SRC := $(filter-out $(SECCOMP_POLICY),$(wildcard sandbox/*.c))
HELPER_SRC  := $(wildcard helper/*.c)
LIB_SRC     := client/libloopfd.c client/partitions.c
CLI_SRC     := client/cli.c

objs = $(patsubst %.c,$(O)/%.o,$(1))
pics = $(patsubst %.c,$(O)/pic/%.o,$(1))

HELPER   := $(O)/loopfd-helper
CLI      := $(O)/loopfd
LIB_A    := $(O)/libloopfd.a
LIB_SO   := $(O)/libloopfd.so.1
PC       := $(O)/loopfd.pc

.PHONY: all install uninstall check unit integration hostile fuzz-smoke fuzz \
        demo deps bench analyze asan asan-cli clean

all: $(HELPER) $(CLI) $(LIB_A) $(LIB_SO) $(PC) test-programs

# Compiled-in paths live in one generated header, rewritten only when a path
# changes, so that every object that uses a path is rebuilt then and only then.
$(O)/paths.h: FORCE
	@mkdir -p $(O)
	@printf '#define LOOPFD_VERSION "%s"\n#define LOOPFD_HELPER_PATH "%s"\n#define LOOPFD_CONFIG_PATH "%s"\n#define LOOPFD_RUNDIR "%s"\n' \
		'$(VERSION)' '$(LIBEXECDIR)/loopfd-helper' '$(SYSCONFDIR)/loopfd.conf' \
		'$(RUNSTATEDIR)' > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
FORCE:

# The helper's seccomp programs, compiled from the policy by libseccomp on
# the build machine (so the helper needs no rule compiler at run time).
# (seccomp.h: a libseccomp upgrade regenerates the programs)
$(O)/seccomp_policy: $(SECCOMP_POLICY) $(wildcard /usr/include/seccomp.h)
	@mkdir -p $(O)
	$(CC) $(CPPFLAGS_ALL) $(CPPFLAGS) $(CFLAGS_ALL) -pie -fPIE $(LDFLAGS_ALL) $< -lseccomp -o $@

$(O)/seccomp_filters.h: $(O)/seccomp_policy
	$< > $@.tmp && mv $@.tmp $@

$(O)/sandbox/seccomp.o: $(O)/seccomp_filters.h

$(O)/%.o: %.c $(O)/paths.h $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CPPFLAGS) $(CFLAGS_ALL) -fPIE -c $< -o $@

$(O)/pic/%.o: %.c $(O)/paths.h $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CPPFLAGS) $(CFLAGS_ALL) -fPIC -fvisibility=hidden -c $< -o $@

# The helper is a static PIE: a setuid program that needs no dynamic loader
# cannot be steered by the loader's environment, still starts when the caller
# left it no free fd (RLIMIT_NOFILE) to open a shared library with, and
# execs about as fast as a static no-op.
$(HELPER): $(call objs,$(HELPER_SRC) $(SANDBOX_SRC) $(PROTO_SRC))
	$(CC) $(CFLAGS_ALL) -static-pie $(LDFLAGS_ALL) $^ -lcap -o $@

$(LIB_A): $(call objs,$(LIB_SRC) $(PROTO_SRC))
	rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(call pics,$(LIB_SRC) $(PROTO_SRC))
	$(CC) $(CFLAGS_ALL) -shared $(LDFLAGS_ALL) -Wl,-soname,libloopfd.so.1 $^ -lblkid -o $@
	ln -sf libloopfd.so.1 $(O)/libloopfd.so

# The CLI is a static PIE too: `loopfd run` starts three programs where
# losetup starts two, and a static exec saves the dynamic loader's work.
CLI_LINK ?= -static-pie
$(CLI): $(call objs,$(CLI_SRC)) $(LIB_A)
	$(CC) $(CFLAGS_ALL) $(CLI_LINK) $(LDFLAGS_ALL) $^ -lblkid -o $@

# Rewritten when a path changes, like paths.h.
$(PC): client/loopfd.pc.in FORCE
	@mkdir -p $(dir $@)
	@sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@

# ---- test programs (built with the same flags; not installed) -------------
TEST_PROGS := $(O)/tests/seccomp_probe $(O)/tests/hostile_exec $(O)/tests/marker_preload.so \
              $(O)/tests/devctl \
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

$(O)/tests/marker_preload.so: tests/sandbox/marker_preload.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fPIC -shared $(LDFLAGS_ALL) $< -o $@

$(O)/tests/rawclient: $(O)/tests/hostile/rawclient.o $(call objs,$(PROTO_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -o $@

$(O)/tests/bench: $(O)/bench/bench.o $(O)/helper/quota.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -o $@

# ---- unit tests (cmocka) ---------------------------------------------------
UNIT_TESTS := $(O)/tests/test_proto $(O)/tests/test_config

$(O)/tests/test_proto: $(O)/tests/unit/test_proto.o $(call objs,$(PROTO_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -lcmocka -o $@

$(O)/tests/test_config: $(O)/tests/unit/test_config.o $(O)/helper/config.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -pie $(LDFLAGS_ALL) $^ -lcmocka -o $@

unit: $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== $$t"; $$t || exit 1; done

# ---- install ---------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(INCLUDEDIR) \
	           $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 0755 $(CLI) $(DESTDIR)$(BINDIR)/loopfd
	install -m 0755 $(HELPER) $(DESTDIR)$(LIBEXECDIR)/loopfd-helper
	@if [ "$$(id -u)" = 0 ]; then \
		chown root:root $(DESTDIR)$(LIBEXECDIR)/loopfd-helper && \
		chmod 4755 $(DESTDIR)$(LIBEXECDIR)/loopfd-helper; \
	else echo "not root: $(LIBEXECDIR)/loopfd-helper installed without setuid"; fi
	install -m 0644 client/loopfd.h $(DESTDIR)$(INCLUDEDIR)/loopfd.h
	install -m 0644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libloopfd.a
	install -m 0755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/libloopfd.so.1
	ln -sf libloopfd.so.1 $(DESTDIR)$(LIBDIR)/libloopfd.so
	install -m 0644 $(PC) $(DESTDIR)$(LIBDIR)/pkgconfig/loopfd.pc

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/loopfd $(DESTDIR)$(LIBEXECDIR)/loopfd-helper \
	      $(DESTDIR)$(INCLUDEDIR)/loopfd.h $(DESTDIR)$(LIBDIR)/libloopfd.* \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/loopfd.pc

# ---- the README's two commands ---------------------------------------------
deps:
	@tests/deps.sh

check: deps
	@tests/check.sh

demo: deps
	@tests/demo.sh

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
	$(FUZZ) -max_total_time=$(FUZZ_SECONDS) -max_len=$$((8192+64)) \
		$(O)/fuzz/corpus tests/fuzz/corpus

fuzz-smoke: $(FUZZ)
	$(FUZZ) -runs=0 tests/fuzz/corpus
	@mkdir -p $(O)/fuzz/smoke
	$(FUZZ) -max_total_time=$(FUZZ_SECONDS) -max_len=$$((8192+64)) \
		$(O)/fuzz/smoke tests/fuzz/corpus

# ---- static analysis and sanitizers ----------------------------------------
ALL_SRC = $(PROTO_SRC) $(SANDBOX_SRC) $(SECCOMP_POLICY) $(HELPER_SRC) $(LIB_SRC) $(CLI_SRC)

analyze: $(O)/paths.h $(O)/seccomp_filters.h
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
		--inline-suppr --std=c11 -D_GNU_SOURCE -I$(O) -Iprotocol -Isandbox \
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
