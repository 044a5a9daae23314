# Makefile - memsvc: one non-recursive makefile for the daemon, client, engine, tools and tests
#
#   make deps      install the Debian 12 packages the project needs (only what is missing)
#   make all       build everything into build/
#   make test      build and run the test suites
#   make test-san  the same tests under AddressSanitizer + UndefinedBehaviorSanitizer (build-san/)
#   make run       the main job
#   make bench     benchmarks, each next to a reference measured in the same run
#   make soak      SOAK_SECS (120) of clients and the daemon killed at random: bytes checked
#   make install   memsvcd, memsvc-ctl, memtrace, libmemsvc (shared and static), its headers,
#                  memsvc.pc and the Python package memsvc into $(DESTDIR)$(PREFIX)
#                  (PREFIX=/usr/local); make uninstall
#   make clean     remove build outputs
#
# V=1 shows the commands; NODEPS=1 skips the package check.

SAN     ?= 0
ifeq ($(SAN),1)
B       ?= build-san
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
OPT     ?= -O1
else
B       ?= build
SANFLAGS =
OPT     ?= -O2
endif

CC      ?= cc
PKGS    := ucx msgpack jemalloc liburing cunit jansson libsystemd libmicrohttpd libsodium zlib
# Expanded once, on first use: after `deps` has installed what pkg-config reads.
PKG_CFLAGS = $(eval PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS)))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $(shell pkg-config --libs ucx msgpack jemalloc liburing jansson libsystemd libmicrohttpd libsodium zlib))$(PKG_LIBS)
CUNIT_LIBS = $(eval CUNIT_LIBS := $(shell pkg-config --libs cunit))$(CUNIT_LIBS)

CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
           -Wshadow -Wpointer-arith -Wstrict-prototypes -fno-strict-aliasing $(SANFLAGS)
CPPFLAGS += -I. -D_GNU_SOURCE $(PKG_CFLAGS) -MMD -MP
LDFLAGS += $(SANFLAGS)
LDLIBS   = $(PKG_LIBS) -lpthread -lm

ifeq ($(V),1)
Q :=
else
Q := @
endif

# ---- sources, per directory -------------------------------------------------------------
CLIENT_SRCS  := $(wildcard client/*.c)
SIM_SRCS     := $(wildcard sim_npu/*.c)
ENGINE_SRCS  := $(wildcard memsvc/eng_*.c)
DAEMON_SRCS  := $(wildcard memsvc/msd_*.c)
POLICY_SRCS  := $(wildcard policy/*.c)
TRACE_SRCS   := $(filter-out tools/memtrace/main.c,$(wildcard tools/memtrace/*.c))
TEST_SRCS    := $(wildcard tests/*.c) $(wildcard tests/unit/*.c) $(wildcard tests/integ/*.c)
BENCH_SRCS   := $(wildcard tools/bench/*.c)
EXAMPLE_SRCS := $(wildcard tools/examples/*.c)
SOAK_SRCS    := $(wildcard tools/soak/*.c)

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

LIBCLIENT := $(B)/lib/libmemsvc.a
# the shared client library: versioned from the header, only the memsvc_* API exported
LIBVER    := $(shell sed -n 's/^\#define MEMSVC_VERSION_STRING "\(.*\)"/\1/p' client/memsvc.h)
LIBMAJOR  := $(firstword $(subst ., ,$(LIBVER)))
LIBSO     := $(B)/lib/libmemsvc.so.$(LIBVER)
LIBCORE   := $(B)/lib/libmemsvc_core.a
LIBTRACE  := $(B)/lib/libmemtrace.a

BIN_MEMSVCD := $(B)/bin/memsvcd
BIN_MEMTRACE := $(B)/bin/memtrace
BIN_CTL     := $(B)/bin/memsvc-ctl
BIN_TESTS   := $(B)/bin/memsvc_tests
BIN_BENCH   := $(patsubst tools/bench/%.c,$(B)/bin/%,$(BENCH_SRCS))
BIN_EXAMPLES := $(patsubst tools/examples/%.c,$(B)/bin/%,$(EXAMPLE_SRCS))
BIN_SOAK    := $(patsubst tools/soak/%.c,$(B)/bin/%,$(SOAK_SRCS))

BINS := $(BIN_TESTS) $(BIN_BENCH) $(BIN_EXAMPLES) $(BIN_SOAK)
ifneq ($(wildcard memsvc/memsvcd.c),)
BINS += $(BIN_MEMSVCD)
endif
ifneq ($(wildcard tools/memtrace/main.c),)
BINS += $(BIN_MEMTRACE)
endif
ifneq ($(wildcard tools/ctl/memsvc-ctl.c),)
BINS += $(BIN_CTL)
endif

ALL_SRCS := $(CLIENT_SRCS) $(SIM_SRCS) $(ENGINE_SRCS) $(DAEMON_SRCS) $(POLICY_SRCS) \
            $(TRACE_SRCS) $(TEST_SRCS) $(BENCH_SRCS) $(EXAMPLE_SRCS) $(SOAK_SRCS) \
            $(wildcard memsvc/memsvcd.c tools/memtrace/main.c tools/ctl/memsvc-ctl.c)

.PHONY: all deps test test-san run bench clean fuzz install uninstall man soak
.SECONDARY:
.DEFAULT_GOAL := all

all: $(BINS) $(LIBSO)

ifeq ($(NODEPS),1)
DEPS_PREREQ :=
else
DEPS_PREREQ := deps
endif

deps:
	$(Q)sh tools/deps.sh

# ---- rules --------------------------------------------------------------------------------
$(B)/obj/%.o: %.c | $(DEPS_PREREQ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIBCLIENT): $(call obj,$(CLIENT_SRCS))

# position-independent objects of the client, for the shared library
$(B)/pic/%.o: %.c | $(DEPS_PREREQ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC PIC  $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -c -o $@ $<

$(LIBSO): $(patsubst %.c,$(B)/pic/%.o,$(CLIENT_SRCS)) client/libmemsvc.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(LDFLAGS) -Wl,-soname,libmemsvc.so.$(LIBMAJOR) \
		-Wl,--version-script=client/libmemsvc.map -Wl,--no-undefined -o $@ $(filter %.o,$^) \
		$(shell pkg-config --libs ucx msgpack libsodium) -lpthread
	$(Q)ln -sf libmemsvc.so.$(LIBVER) $(B)/lib/libmemsvc.so.$(LIBMAJOR)
	$(Q)ln -sf libmemsvc.so.$(LIBMAJOR) $(B)/lib/libmemsvc.so

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
DOCDIR  ?= $(PREFIX)/share/doc/memsvc
PCDIR   ?= $(LIBDIR)/pkgconfig
# the Python package: Debian's directory of site packages of /usr/bin/python3 (with PREFIX=/usr)
PYDIR   ?= $(PREFIX)/lib/python3/dist-packages
PYSRCS  := $(wildcard client/python/memsvc/*.py)
MANDIR  ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
# systemd reads units of locally installed software from /usr/local/lib/systemd/system too
UNITDIR ?= $(PREFIX)/lib/systemd/system
MANPAGES := docs/man/memsvcd.8 docs/man/memsvc-ctl.1 docs/man/memtrace.1
HEADERS := client/memsvc.h client/memsvc_status.h client/memsvc_types.h

$(LIBCORE): $(call obj,$(SIM_SRCS) $(ENGINE_SRCS) $(POLICY_SRCS) $(DAEMON_SRCS))
$(LIBTRACE): $(call obj,$(TRACE_SRCS))
$(B)/lib/%.a:
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && $(AR) rcs $@ $^

LIBS_ALL := $(LIBTRACE) $(LIBCORE) $(LIBCLIENT)

define link
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIBS_ALL) $(1) $(LDLIBS)
endef

$(BIN_TESTS): $(call obj,$(TEST_SRCS)) $(LIBS_ALL)
	$(call link,$(CUNIT_LIBS))
$(BIN_MEMSVCD): $(call obj,memsvc/memsvcd.c) $(LIBS_ALL)
	$(call link,)
$(BIN_MEMTRACE): $(call obj,tools/memtrace/main.c) $(LIBS_ALL)
	$(call link,)
$(BIN_CTL): $(call obj,tools/ctl/memsvc-ctl.c) $(LIBS_ALL)
	$(call link,)
$(B)/bin/%: $(B)/obj/tools/bench/%.o $(LIBS_ALL)
	$(call link,)
$(B)/bin/%: $(B)/obj/tools/examples/%.o $(LIBS_ALL)
	$(call link,)
$(B)/bin/%: $(B)/obj/tools/soak/%.o $(LIBS_ALL)
	$(call link,)

# ---- installing ---------------------------------------------------------------------------
# Headers go to $(INCDIR)/memsvc/ side by side (their "client/" include prefix is dropped):
# a program includes <memsvc/memsvc.h> and builds with `pkg-config --cflags --libs memsvc`.
install: all
	$(Q)install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PCDIR) \
		$(DESTDIR)$(INCDIR)/memsvc $(DESTDIR)$(DOCDIR)
	$(Q)install -m 755 $(BIN_MEMSVCD) $(BIN_CTL) $(BIN_MEMTRACE) $(DESTDIR)$(BINDIR)/
	$(Q)install -m 755 $(LIBSO) $(DESTDIR)$(LIBDIR)/
	$(Q)ln -sf libmemsvc.so.$(LIBVER) $(DESTDIR)$(LIBDIR)/libmemsvc.so.$(LIBMAJOR)
	$(Q)ln -sf libmemsvc.so.$(LIBMAJOR) $(DESTDIR)$(LIBDIR)/libmemsvc.so
	$(Q)install -m 644 $(LIBCLIENT) $(DESTDIR)$(LIBDIR)/
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
		-e 's|@VERSION@|$(LIBVER)|' client/memsvc.pc.in > $(DESTDIR)$(PCDIR)/memsvc.pc
	$(Q)for h in $(HEADERS); do \
		sed 's|#include "client/|#include "|' $$h > $(DESTDIR)$(INCDIR)/memsvc/$${h#client/} && \
		chmod 644 $(DESTDIR)$(INCDIR)/memsvc/$${h#client/} || exit 1; done
	$(Q)install -m 644 README.md docs/api.md docs/protocol.md docs/operations.md \
		docs/memsvcd.conf.example docs/python.md $(DESTDIR)$(DOCDIR)/
	$(Q)install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR)
	$(Q)install -m 644 docs/man/memsvc-ctl.1 docs/man/memtrace.1 $(DESTDIR)$(MANDIR)/man1/
	$(Q)install -m 644 docs/man/memsvcd.8 $(DESTDIR)$(MANDIR)/man8/
	$(Q)sed -e 's|@BINDIR@|$(BINDIR)|' -e 's|@DOCDIR@|$(DOCDIR)|' tools/systemd/memsvcd.service.in \
		> $(DESTDIR)$(UNITDIR)/memsvcd.service && chmod 644 $(DESTDIR)$(UNITDIR)/memsvcd.service
	@# the config file is the administrator's: installed only when there is none (as dpkg does
	@# with conffiles an administrator changed)
	$(Q)install -d $(DESTDIR)$(SYSCONFDIR)/memsvc
	$(Q)if [ ! -e $(DESTDIR)$(SYSCONFDIR)/memsvc/memsvcd.conf ]; then \
		install -m 644 docs/memsvcd.conf.example $(DESTDIR)$(SYSCONFDIR)/memsvc/memsvcd.conf; \
	else echo "  KEEP    $(DESTDIR)$(SYSCONFDIR)/memsvc/memsvcd.conf (exists)"; fi
	$(Q)install -d $(DESTDIR)$(PYDIR)/memsvc $(DESTDIR)$(DOCDIR)/examples
	$(Q)install -m 644 $(PYSRCS) $(DESTDIR)$(PYDIR)/memsvc/
	$(Q)install -m 644 client/python/examples/train_moe.py $(DESTDIR)$(DOCDIR)/examples/
	@echo "  INSTALL $(DESTDIR)$(PREFIX)"

uninstall:
	$(Q)rm -f $(addprefix $(DESTDIR)$(BINDIR)/,memsvcd memsvc-ctl memtrace) \
		$(DESTDIR)$(LIBDIR)/libmemsvc.so $(DESTDIR)$(LIBDIR)/libmemsvc.so.$(LIBMAJOR) \
		$(DESTDIR)$(LIBDIR)/libmemsvc.so.$(LIBVER) $(DESTDIR)$(LIBDIR)/libmemsvc.a \
		$(DESTDIR)$(PCDIR)/memsvc.pc $(addprefix $(DESTDIR)$(INCDIR)/memsvc/,$(notdir $(HEADERS))) \
		$(addprefix $(DESTDIR)$(DOCDIR)/,README.md api.md protocol.md operations.md \
		memsvcd.conf.example python.md examples/train_moe.py) $(DESTDIR)$(MANDIR)/man8/memsvcd.8 \
		$(addprefix $(DESTDIR)$(MANDIR)/man1/,memsvc-ctl.1 memtrace.1) \
		$(DESTDIR)$(UNITDIR)/memsvcd.service
	$(Q)rm -rf $(DESTDIR)$(PYDIR)/memsvc
	@# the config file goes only when it is the example unchanged (as dpkg's purge does)
	$(Q)if cmp -s docs/memsvcd.conf.example $(DESTDIR)$(SYSCONFDIR)/memsvc/memsvcd.conf; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/memsvc/memsvcd.conf; fi
	$(Q)rmdir $(DESTDIR)$(INCDIR)/memsvc $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) \
		$(DESTDIR)$(SYSCONFDIR)/memsvc 2>/dev/null || true
	@echo "  UNINSTALL $(DESTDIR)$(PREFIX)"

# The man pages: generated from the programs' --help (tools/mkman.sh) and docs/man/*.in, and
# committed (a build needs no generator); `make man` writes them again after --help changed.
man: $(BIN_MEMSVCD) $(BIN_CTL) $(BIN_MEMTRACE)
	$(Q)sh tools/mkman.sh memsvcd 8 "memory manager daemon for NPU training" docs/man/memsvcd.8.in \
		"$(BIN_MEMSVCD) --help" > docs/man/memsvcd.8
	$(Q)sh tools/mkman.sh memsvc-ctl 1 "look at a running memsvcd" docs/man/memsvc-ctl.1.in \
		"$(BIN_CTL) --help" > docs/man/memsvc-ctl.1
	$(Q)sh tools/mkman.sh memtrace 1 "generate, import, replay and tune memory traces" \
		docs/man/memtrace.1.in "$(BIN_MEMTRACE) --help" \
		$(foreach c,gen import dump replay models tune cluster,"$(BIN_MEMTRACE) $(c) --help") \
		> docs/man/memtrace.1
	@echo "  MAN     $(MANPAGES)"

# ---- what a user runs ---------------------------------------------------------------------
# The install test (a staged install, a program built with pkg-config, run against memsvcd)
# runs in the plain build only: the sanitizer build's objects need the sanitizer runtime.
# KILLS=100: the full kill -9 loop of the local-path tests (default 20, tests/integ/test_local.c)
# Python suites (tests/python, pytest) run against the plain build: Debian's python3 has the
# PyTorch they need; the sanitizer build's library cannot be loaded into an unsanitized python.
PYTHON ?= /usr/bin/python3
# The tests' child processes (daemons, tools) and the libraries write their stderr to files in
# $(B)/test-logs/: printed when a test fails, not interleaved with CUnit's lines. UCX logs to
# stdout unless told otherwise (UCX_LOG_FILE): the clients the tests run log to stderr too.
test: all
	$(Q)rm -rf $(B)/test-logs && mkdir -p $(B)/test-logs
	$(Q)MEMSVC_BIN=$(abspath $(B)/bin) $(if $(KILLS),MEMSVC_TEST_KILLS=$(KILLS)) \
	    MEMSVC_TEST_LOG_DIR=$(abspath $(B)/test-logs) UCX_LOG_FILE=stderr \
	    $(if $(filter 1,$(SAN)),LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp)) \
	    MEMSVC_TEST_LOG=$(abspath $(B)/test-logs/memsvc_tests.stderr) $(BIN_TESTS)
ifneq ($(SAN),1)
	$(Q)sh tests/install/install_test.sh $(B)
	$(Q)if ls tests/python/test_*.py >/dev/null 2>&1; then \
	    MEMSVC_BIN=$(abspath $(B)/bin) MEMSVC_LIB=$(abspath $(B)/lib) PYTHONPATH=$(abspath client/python) \
	    $(PYTHON) -m pytest -q -p no:cacheprovider tests/python; fi
endif

test-san:
	$(Q)$(MAKE) --no-print-directory SAN=1 test

run: all
	$(Q)sh tools/run.sh $(abspath $(B)/bin)

bench: all
	$(Q)sh tools/bench/run.sh $(abspath $(B)/bin)

# Soak (not part of `make test`): mixed clients, random kill -9 of clients and of the daemon,
# every byte checked, durable tensors across restarts; SOAK_SECS long (tools/soak/).
SOAK_SECS ?= 120
soak: all
	$(Q)$(B)/bin/memsvc_soak --bin $(abspath $(B)/bin) --secs $(SOAK_SECS)

# ---- fuzzing: the wire decoder, the trace reader and the importers under libFuzzer (clang).
# `make fuzz` runs every target for FUZZ_TIME/3 seconds; corpora are kept in $(B)/fuzz-corpus/,
# seeded from tests/data/ and from small generated traces.
FUZZ_TIME    ?= 30
FUZZ_TARGETS := proto trace import
FUZZ_COMMON  := client/memsvc_status.c client/memsvc_types.c
FUZZ_SRCS_proto  := tests/fuzz/fuzz_proto.c client/msp_proto.c $(FUZZ_COMMON)
FUZZ_SRCS_trace  := tests/fuzz/fuzz_trace.c tools/memtrace/trace.c $(FUZZ_COMMON)
FUZZ_SRCS_import := tests/fuzz/fuzz_import.c $(wildcard tools/memtrace/import*.c) \
                    tools/memtrace/trace.c $(FUZZ_COMMON)
FUZZ_LIBS_proto  = $(shell pkg-config --libs msgpack)
FUZZ_LIBS_trace  = $(shell pkg-config --libs msgpack)
FUZZ_LIBS_import = $(shell pkg-config --libs msgpack jansson)
FUZZ_OPTS_import := -dict=tests/fuzz/import.dict
FUZZ_EACH    = $(shell expr $(FUZZ_TIME) / 3 \| 1)

.SECONDEXPANSION:
$(B)/bin/fuzz_%: tests/fuzz/fuzz_util.h $$(FUZZ_SRCS_$$*)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
		-D_GNU_SOURCE $(PKG_CFLAGS) -o $@ $(FUZZ_SRCS_$*) $(FUZZ_LIBS_$*)

# Seeds: the importers' test inputs; traces small enough for the fuzzer to mutate.
$(B)/fuzz-corpus/.seeded: $(BIN_MEMTRACE) $(wildcard tests/data/*)
	$(Q)mkdir -p $(addprefix $(B)/fuzz-corpus/,$(FUZZ_TARGETS))
	$(Q)cp tests/data/* $(B)/fuzz-corpus/import/
	$(Q)$(BIN_MEMTRACE) gen --model tiny-moe --node tiny layers=1 experts=2 --microbatches 1 \
		-o $(B)/fuzz-corpus/trace/seed-tiny-moe-1.trace 2>/dev/null
	$(Q)$(BIN_MEMTRACE) gen --model tiny-moe --node tiny layers=2 experts=4 --microbatches 2 \
		--steps 2 --seed 7 -o $(B)/fuzz-corpus/trace/seed-tiny-moe-2.trace 2>/dev/null
	$(Q)touch $@

fuzz: $(addprefix $(B)/bin/fuzz_,$(FUZZ_TARGETS)) $(B)/fuzz-corpus/.seeded
	$(Q)set -e; for t in $(FUZZ_TARGETS); do \
		echo "  FUZZ    $$t: $(FUZZ_EACH) s"; \
		$(B)/bin/fuzz_$$t -max_total_time=$(FUZZ_EACH) -max_len=65536 -timeout=10 \
			$(FUZZ_OPTS_$$t) -print_final_stats=1 $(B)/fuzz-corpus/$$t; \
	done

clean:
	rm -rf build build-san

-include $(patsubst %.c,$(B)/obj/%.d,$(ALL_SRCS))
-include $(patsubst %.c,$(B)/pic/%.d,$(CLIENT_SRCS))
