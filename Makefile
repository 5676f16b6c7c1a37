# spindle - one non-recursive Makefile for every entry point.
#
#   make            debug build in build/debug/, bin/spindle points at it
#   make release    optimised build in build/release/, bin/spindle points at it
#   make run        debug build, then `spindle serve -c etc/spindle.conf` in the foreground
#   make test       build and run every unit and integration suite (debug)
#   make asan       the same tests under AddressSanitizer + UBSan (leaks fatal)
#   make tsan       the same tests under ThreadSanitizer
#   make bench      benchmarks (release build, wrk over loopback), see bench/README.md
#   make format     clang-format every source file
#   make deps       check (and as root install) the Debian packages spindle needs
#   make install    install under PREFIX (/usr/local) and DESTDIR; make uninstall removes it
#
# Variants build into build/<variant>/ with dependency files; WERROR=1 adds -Werror.

VARIANT ?= debug
BUILD_DIR ?= build
B := $(BUILD_DIR)/$(VARIANT)
# What `spindle version`, the start-up log line and spindle_build_info report. The commit comes
# from git at build time; outside a git checkout (a release tarball) it is "unknown".
VERSION := 0.1.0
GIT_COMMIT := $(or $(shell git rev-parse --short=12 HEAD 2>/dev/null),unknown)
# Restrict the library and unit suites to some modules (e.g. MODULES="context logging"). A
# module is a top-level folder; its sources and unit suites may sit in nested folders
# (server/http/conn.c, tests/unit/server/http/test_conn.c).
MODULES ?= context pool logging server cli
CC ?= cc

# libpq's headers live in their own directory on Debian (/usr/include/postgresql).
PQ_CFLAGS := $(or $(shell pkg-config --cflags libpq 2>/dev/null),-I/usr/include/postgresql)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wno-missing-field-initializers
ifeq ($(WERROR),1)
WARN += -Werror
endif

BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread -I. -Iinclude -MMD -MP $(WARN) $(PQ_CFLAGS)
ifeq ($(VARIANT),debug)
VFLAGS := -O1 -g3 -fno-omit-frame-pointer
else ifeq ($(VARIANT),release)
VFLAGS := -O2 -g -DNDEBUG
else ifeq ($(VARIANT),asan)
VFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
          -fno-sanitize-recover=undefined
else ifeq ($(VARIANT),tsan)
VFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
else
$(error unknown VARIANT '$(VARIANT)': use debug, release, asan or tsan)
endif

CFLAGS_ALL := $(BASE_CFLAGS) $(VFLAGS) $(CFLAGS)
LDFLAGS_ALL := -pthread $(filter -fsanitize=%,$(VFLAGS)) $(LDFLAGS)
LIBS := -lev -lhttp_parser -linih -lcrypto -lzstd -lz -lsystemd -ljansson -lsqlite3 -lpq -lm
TEST_LIBS := -lcunit -ljansson

# ---- sources -------------------------------------------------------------------------------
MAIN_SRC := server/main.c
# every .c under each module's folder, at any depth
rwildcard = $(foreach d,$(wildcard $(1:=/*)),$(call rwildcard,$(d),$(2)) $(filter $(subst *,%,$(2)),$(d)))
LIB_SRCS := $(filter-out $(MAIN_SRC),$(sort $(call rwildcard,$(MODULES),*.c)))
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
BIN := $(B)/spindle

UNIT_SRCS := $(sort $(foreach f,$(foreach m,$(MODULES),$(call rwildcard,tests/unit/$(m),*.c)),\
               $(if $(filter test_%,$(notdir $(f))),$(f))))
# support files: tests/unit/*.c, the other files beside the suites (cases several suites share)
# and the PostgreSQL cluster of the integration suites (tests/integration/pg.c)
UNIT_SUPPORT := $(sort $(wildcard tests/unit/*.c) tests/integration/pg.c \
                  $(filter-out $(UNIT_SRCS),$(foreach m,$(MODULES),$(call rwildcard,tests/unit/$(m),*.c))))
INTEG_SRCS := $(sort $(wildcard tests/integration/test_*.c))
INTEG_SUPPORT := $(filter-out $(INTEG_SRCS),$(sort $(wildcard tests/integration/*.c)))
UNIT_BIN := $(B)/tests/unit_tests
INTEG_BIN := $(B)/tests/integration_tests

# suite_<dirs>_<file>() for tests/unit/<dir>/.../test_<file>.c (the folders joined by "_":
# tests/unit/server/http/test_conn.c defines suite_server_http_conn); suite_integration_<file>()
# for tests/integration/test_<file>.c. The runner calls each one; a new file needs no other edit.
unit_suite = suite_$(subst /,_,$(subst /test_,_,$(patsubst tests/unit/%.c,%,$(1))))
integ_suite = suite_integration_$(patsubst tests/integration/test_%.c,%,$(1))

# Test modules: tests/modules/<name>.c -> build/<variant>/tests/modules/<name>.so, loaded by the
# integration suites ([kind.NAME] module = ...; SPINDLE_MODULES names their folder).
TEST_MODULE_SRCS := $(sort $(wildcard tests/modules/*.c))
TEST_MODULES := $(TEST_MODULE_SRCS:tests/modules/%.c=$(B)/tests/modules/%.so)

BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(B)/bench/%)

DEPS_STAMP := build/.deps-ok
# debian-packages.txt is the one list (also read by .ci/run); make needs the build and test ones.
DEB_PKGS := $(shell awk '!/^\#/ && ($$2 == "build" || $$2 == "test") {print $$1}' debian-packages.txt)

.PHONY: FORCE all release run test unit integration asan tsan bench format deps clean check-format
.DEFAULT_GOAL := all

all: $(BIN) | bin
	@ln -sfn $(if $(filter /%,$(BIN)),$(BIN),../$(BIN)) bin/spindle

release:
	@$(MAKE) --no-print-directory VARIANT=release all

bin:
	@mkdir -p bin

run: all
	$(abspath $(BIN)) serve -c etc/spindle.conf --log-file -

# Tests: unit suites first, then the real binary over loopback. Extra runner arguments (a suite
# name to run only it) go in TESTS=...
INTEG_ENV = SPINDLE_BIN=$(abspath $(BIN)) SPINDLE_ETC=$(abspath etc) \
            SPINDLE_MODULES=$(abspath $(B)/tests/modules)

test: $(UNIT_BIN) $(INTEG_BIN) $(BIN) $(TEST_MODULES)
	@echo "== unit tests ($(VARIANT))"
	@$(TEST_ENV) $(abspath $(UNIT_BIN)) $(TESTS)
	@echo "== integration tests ($(VARIANT))"
	@$(TEST_ENV) $(INTEG_ENV) $(abspath $(INTEG_BIN)) $(TESTS)

unit: $(UNIT_BIN)
	@$(TEST_ENV) $(abspath $(UNIT_BIN)) $(TESTS)

integration: $(INTEG_BIN) $(BIN) $(TEST_MODULES)
	@$(TEST_ENV) $(INTEG_ENV) $(abspath $(INTEG_BIN)) $(TESTS)

ifeq ($(VARIANT),asan)
TEST_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1 \
            UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 LSAN_OPTIONS=exitcode=23
else ifeq ($(VARIANT),tsan)
TEST_ENV := TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1"
else ifeq ($(VARIANT),release)
# the release build also runs the long tests (gigabyte transfers: tests/integration/test_stream.c)
TEST_ENV := SPINDLE_TEST_LONG=1
else
TEST_ENV :=
endif

asan:
	@$(MAKE) --no-print-directory VARIANT=asan test

tsan:
	@$(MAKE) --no-print-directory VARIANT=tsan test

# Benchmarks: HTTP next to nginx and idle memory, jobs next to bench/limit, overload and
# fairness, a module's kind next to the built-in one, durable tasks next to bench/sqlite_limit and
# BullMQ, and the logger. Results are appended to bench/results/.
bench:
	@$(MAKE) --no-print-directory VARIANT=release all bench-bins
	@bench/run.sh
	@bench/jobs.sh
	@bench/overload.sh
	@bench/exec.sh
	@bench/module.sh
	@bench/tasks.sh
	@$(BUILD_DIR)/release/bench/logbench | tee -a bench/results/log.txt

.PHONY: bench-bins
bench-bins: $(BENCH_BINS) $(B)/tests/modules/mod_noop.so

# ---- rules ---------------------------------------------------------------------------------
# Only server/version.c sees the version and commit; its stamp changes when they do, so a new
# commit rebuilds that one object.
$(B)/version.stamp: FORCE
	@mkdir -p $(@D)
	@echo '$(VERSION) $(GIT_COMMIT)' > $@.tmp
	@cmp -s $@.tmp $@ 2>/dev/null && rm -f $@.tmp || mv $@.tmp $@

$(B)/server/version.o: CFLAGS_ALL += -DSPINDLE_VERSION='"$(VERSION)"' \
                                     -DSPINDLE_COMMIT='"$(GIT_COMMIT)"'
$(B)/server/version.o: $(B)/version.stamp

$(B)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BIN): $(B)/$(MAIN_SRC:.c=.o) $(LIB_OBJS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

# A module includes only the public header, as one built out of tree would.
$(B)/tests/modules/%.so: tests/modules/%.c include/spindle/module.h | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) -std=c11 -D_GNU_SOURCE -Iinclude $(WARN) $(VFLAGS) $(CFLAGS) -fPIC -shared -o $@ $<

$(B)/tests/unit_suites.h: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' $(foreach f,$(UNIT_SRCS),'SPINDLE_SUITE($(call unit_suite,$(f)))') > $@.tmp
	@cmp -s $@.tmp $@ 2>/dev/null && rm -f $@.tmp || mv $@.tmp $@

$(B)/tests/integ_suites.h: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' $(foreach f,$(INTEG_SRCS),'SPINDLE_SUITE($(call integ_suite,$(f)))') > $@.tmp
	@cmp -s $@.tmp $@ 2>/dev/null && rm -f $@.tmp || mv $@.tmp $@

$(B)/tests/unit_runner.o: tests/runner.c $(B)/tests/unit_suites.h | $(DEPS_STAMP)
	$(CC) $(CFLAGS_ALL) -DSPINDLE_SUITES='"unit_suites.h"' -I$(B)/tests -c $< -o $@

$(B)/tests/integ_runner.o: tests/runner.c $(B)/tests/integ_suites.h | $(DEPS_STAMP)
	$(CC) $(CFLAGS_ALL) -DSPINDLE_SUITES='"integ_suites.h"' -I$(B)/tests -c $< -o $@

$(UNIT_BIN): $(B)/tests/unit_runner.o $(UNIT_SRCS:%.c=$(B)/%.o) $(UNIT_SUPPORT:%.c=$(B)/%.o) \
             $(LIB_OBJS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS) $(TEST_LIBS)

$(INTEG_BIN): $(B)/tests/integ_runner.o $(INTEG_SRCS:%.c=$(B)/%.o) \
              $(INTEG_SUPPORT:%.c=$(B)/%.o) $(LIB_OBJS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS) $(TEST_LIBS)

$(B)/bench/%: bench/%.c $(LIB_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $(filter %.c %.o,$^) $(LIBS)

# ---- install --------------------------------------------------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=DIR]: the release binary (INSTALL_BIN=PATH installs
# another build), the man pages, README.md, the module header <spindle/module.h> with its
# pkg-config file spindle-module.pc (Cflags only) and the example module examples/wordfreq/ (in
# the doc directory), the configuration (never overwritten), the systemd
# unit and socket with the installed paths, the sysusers.d and tmpfiles.d entries (user spindle,
# /var/lib/spindle, /var/log/spindle) and the logrotate file. The installed configuration is
# etc/spindle.conf with [log] file = INSTALL_LOG, the file the logrotate file rotates,
# [auth] mode = keys (a service proves its tenants; `make run` keeps none on loopback) and
# [tasks] store = INSTALL_TASKS, in the service's state directory.
# make uninstall removes them again, except a configuration that was changed. README: Install.
PREFIX ?= /usr/local
bindir ?= $(PREFIX)/bin
mandir ?= $(PREFIX)/share/man
docdir ?= $(PREFIX)/share/doc/spindle
sysconfdir ?= /etc
unitdir ?= $(PREFIX)/lib/systemd/system
sysusersdir ?= $(PREFIX)/lib/sysusers.d
tmpfilesdir ?= $(PREFIX)/lib/tmpfiles.d
includedir ?= $(PREFIX)/include
pkgconfigdir ?= $(PREFIX)/share/pkgconfig
INSTALL_BIN ?= $(BUILD_DIR)/release/spindle
INSTALL_LOG := /var/log/spindle/spindle.log
INSTALL_TASKS := /var/lib/spindle/tasks.db
INSTALL ?= install
I_CONF := $(DESTDIR)$(sysconfdir)/spindle/spindle.conf
I_PC := $(DESTDIR)$(pkgconfigdir)/spindle-module.pc
# the shipped unit names the /usr/local paths; the installed one names the real ones
I_UNIT_SED := -e 's|/usr/local/bin/spindle|$(bindir)/spindle|g' \
              -e 's|/etc/spindle/spindle.conf|$(sysconfdir)/spindle/spindle.conf|g' \
              -e 's|/usr/local/share/doc/spindle|$(docdir)|g'
I_CONF_SED := -e '1s|.*|\# spindle.conf - as installed: every key at its default, but [log] file, [auth] mode and [tasks] store.|' \
              -e 's|^file =$$|file = $(INSTALL_LOG)|' -e 's|^mode = none$$|mode = keys|' \
              -e 's|^store = spindle-tasks.db$$|store = $(INSTALL_TASKS)|'
I_FILES := $(bindir)/spindle $(mandir)/man8/spindle.8 $(mandir)/man1/spindle-call.1 \
           $(mandir)/man1/spindle-logs.1 $(docdir)/README.md $(unitdir)/spindle.service \
           $(unitdir)/spindle.socket $(sysusersdir)/spindle.conf $(tmpfilesdir)/spindle.conf \
           $(sysconfdir)/logrotate.d/spindle $(includedir)/spindle/module.h \
           $(pkgconfigdir)/spindle-module.pc $(docdir)/examples/wordfreq/wordfreq.c \
           $(docdir)/examples/wordfreq/Makefile

.PHONY: install uninstall install-release
install: $(if $(filter $(BUILD_DIR)/release/spindle,$(INSTALL_BIN)),install-release)
	$(INSTALL) -d $(sort $(dir $(I_FILES:%=$(DESTDIR)%))) $(dir $(I_CONF))
	$(INSTALL) -m 0755 $(INSTALL_BIN) $(DESTDIR)$(bindir)/spindle
	$(INSTALL) -m 0644 doc/spindle.8 $(DESTDIR)$(mandir)/man8/spindle.8
	$(INSTALL) -m 0644 doc/spindle-call.1 doc/spindle-logs.1 $(DESTDIR)$(mandir)/man1/
	$(INSTALL) -m 0644 README.md $(DESTDIR)$(docdir)/README.md
	sed $(I_UNIT_SED) etc/spindle.service | \
	  $(INSTALL) -m 0644 /dev/stdin $(DESTDIR)$(unitdir)/spindle.service
	@grep -qx 'ExecStart=$(bindir)/spindle serve -c $(sysconfdir)/spindle/spindle.conf' \
	  $(DESTDIR)$(unitdir)/spindle.service || { echo "install: ExecStart not rewritten"; exit 1; }
	$(INSTALL) -m 0644 etc/spindle.socket $(DESTDIR)$(unitdir)/spindle.socket
	$(INSTALL) -m 0644 etc/sysusers.d/spindle.conf $(DESTDIR)$(sysusersdir)/spindle.conf
	$(INSTALL) -m 0644 etc/tmpfiles.d/spindle.conf $(DESTDIR)$(tmpfilesdir)/spindle.conf
	$(INSTALL) -m 0644 etc/logrotate.d/spindle $(DESTDIR)$(sysconfdir)/logrotate.d/spindle
	$(INSTALL) -m 0644 include/spindle/module.h $(DESTDIR)$(includedir)/spindle/module.h
	printf '%s\n' 'prefix=$(PREFIX)' 'includedir=$(includedir)' '' 'Name: spindle-module' \
	  'Description: the C ABI of spindle job kinds (modules)' 'Version: $(VERSION)' \
	  'Cflags: -I$${includedir}' | $(INSTALL) -m 0644 /dev/stdin $(I_PC)
	$(INSTALL) -m 0644 examples/wordfreq/wordfreq.c examples/wordfreq/Makefile \
	  $(DESTDIR)$(docdir)/examples/wordfreq/
	@if [ -e $(I_CONF) ]; then echo "install: kept $(I_CONF) (present)"; else \
	  echo "sed ... etc/spindle.conf > $(I_CONF)"; \
	  sed $(I_CONF_SED) etc/spindle.conf | $(INSTALL) -m 0644 /dev/stdin $(I_CONF) && \
	  grep -qx 'file = $(INSTALL_LOG)' $(I_CONF) && grep -qx 'mode = keys' $(I_CONF) && \
	  grep -qx 'store = $(INSTALL_TASKS)' $(I_CONF) || \
	    { echo "install: [log] file, [auth] mode or [tasks] store not set in $(I_CONF)"; \
	      rm -f $(I_CONF); exit 1; }; fi

install-release:
	@$(MAKE) --no-print-directory VARIANT=release $(BUILD_DIR)/release/spindle

uninstall:
	rm -f $(I_FILES:%=$(DESTDIR)%)
	@rmdir $(DESTDIR)$(docdir)/examples/wordfreq $(DESTDIR)$(docdir)/examples \
	  $(DESTDIR)$(docdir) $(DESTDIR)$(includedir)/spindle 2>/dev/null || true
	@if [ -e $(I_CONF) ]; then \
	  if sed $(I_CONF_SED) etc/spindle.conf | cmp -s - $(I_CONF); then \
	    echo "rm -f $(I_CONF)"; rm -f $(I_CONF); rmdir $(dir $(I_CONF)) 2>/dev/null || true; \
	  else echo "uninstall: kept $(I_CONF) (changed)"; fi; fi

# ---- fuzzing (clang + libFuzzer; not part of test, asan or CI) ------------------------------
# make fuzz [FUZZ_TARGET=http|batch]: build the targets (tests/fuzz/fuzz_<target>.c over the library,
# instrumented for coverage with AddressSanitizer + UBSan) and run one for FUZZ_SECONDS over its
# seeds: http (connection parsing and routing) over tests/fuzz/corpus/, crashers to
# tests/fuzz/crashes/ (replayed by the integration suite); batch (POST /v1/batch bodies: parse,
# run, settle, answer) over tests/fuzz/batch/, crashers to tests/fuzz/batch-crashes/. New inputs
# go to $(FUZZ_DIR)/corpus-<target>/.
FUZZ_SECONDS ?= 600
FUZZ_TARGET ?= http
FUZZ_DIR := $(BUILD_DIR)/fuzz
FUZZ_CC ?= clang
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread -I. -Iinclude -MMD -MP $(WARN) $(PQ_CFLAGS) -g -O1 \
               -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=undefined
FUZZ_OBJS := $(LIB_SRCS:%.c=$(FUZZ_DIR)/%.o)
FUZZ_SEEDS_http := tests/fuzz/corpus
FUZZ_CRASHES_http := tests/fuzz/crashes
FUZZ_SEEDS_batch := tests/fuzz/batch
FUZZ_CRASHES_batch := tests/fuzz/batch-crashes

.PHONY: fuzz fuzz-build
fuzz: fuzz-build
	@test -n "$(FUZZ_SEEDS_$(FUZZ_TARGET))" || { echo "FUZZ_TARGET must be http or batch"; exit 2; }
	@mkdir -p $(FUZZ_DIR)/corpus-$(FUZZ_TARGET) $(FUZZ_CRASHES_$(FUZZ_TARGET))
	$(abspath $(FUZZ_DIR))/fuzz_$(FUZZ_TARGET) -max_len=8192 -max_total_time=$(FUZZ_SECONDS) \
	  -print_final_stats=1 -artifact_prefix=$(FUZZ_CRASHES_$(FUZZ_TARGET))/ \
	  $(FUZZ_DIR)/corpus-$(FUZZ_TARGET) $(FUZZ_SEEDS_$(FUZZ_TARGET))

fuzz-build: $(FUZZ_DIR)/fuzz_http $(FUZZ_DIR)/fuzz_batch

$(FUZZ_DIR)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/tests/fuzz/fuzz_%.o $(FUZZ_OBJS)
	$(FUZZ_CC) -pthread -fsanitize=fuzzer,address,undefined -o $@ $^ $(LIBS)

# the objects of a pattern-built target are kept between runs, not removed as intermediates
.SECONDARY: $(FUZZ_OBJS) $(FUZZ_DIR)/tests/fuzz/fuzz_http.o $(FUZZ_DIR)/tests/fuzz/fuzz_batch.o

ifneq ($(filter fuzz fuzz-build,$(MAKECMDGOALS)),)
-include $(shell find $(FUZZ_DIR) -name '*.d' 2>/dev/null)
endif

# The suite lists are rewritten only when they change (MODULES may differ between calls).
FORCE:

# Dependency check: every package present, or install them (root), or say exactly what to run.
$(DEPS_STAMP): Makefile debian-packages.txt
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || \
	    missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing missing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	  else \
	    echo "spindle needs these Debian packages:$$missing"; \
	    echo "install them with:  sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi
	@mkdir -p $(@D) && touch $@

deps: $(DEPS_STAMP)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

# Every header compiles on its own: its includes and forward declarations are complete.
.PHONY: check-headers
check-headers:
	@for h in $$(git ls-files '*.h'); do \
	  printf '#include "%s"\n' "$$h" | \
	    $(CC) -std=c11 -D_GNU_SOURCE -I. -Iinclude $(PQ_CFLAGS) $(WARN) -Werror -fsyntax-only -x c - || \
	    { echo "check-headers: $$h does not compile on its own"; exit 1; }; \
	done

clean:
	rm -rf build bin

-include $(shell find $(B) -name '*.d' 2>/dev/null)
