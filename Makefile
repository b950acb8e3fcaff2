# tdlab: top-level build. Out-of-tree objects in $(BUILD); one cmocka binary per tests/test_*.c.
CC      ?= cc
BUILD   ?= build
PKGS    := libmicrohttpd jansson sqlite3 openblas lapacke zlib libcurl nettle
OPT     ?= -O2 -march=native
WARN    := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
# GSL (gsl_odeiv2, the igr kind's ODE integrator): its headers from pkg-config, and -lgsl
# alone: OpenBLAS provides the CBLAS that GSL calls (pkg-config's -lgslcblas would be a second
# CBLAS).
CFLAGS  += $(OPT) -g $(WARN) -D_GNU_SOURCE -Icore -pthread -MMD -MP $(shell pkg-config --cflags $(PKGS) gsl 2>/dev/null) $(SAN)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lgsl -llbfgs -lm -pthread $(SAN)
TEST_LDLIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

CORE_SRC   := $(wildcard core/*/*.c)
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
TEST_SRC   := $(wildcard tests/test_*.c)
BENCH_SRC  := $(wildcard bench/*.c)

CORE_OBJ   := $(CORE_SRC:%.c=$(BUILD)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_BIN  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

HOST ?= 127.0.0.1
PORT ?= 8080
DB   ?= var/tdlab.db

.PHONY: all deps run test unit e2e browser bench sanitize tsan fuzz clean reliability load mutants soak
# Keep intermediate objects so that `make test` followed by `make run` rebuilds nothing.
.SECONDARY:
all: $(BUILD)/tdlab $(TEST_BIN) $(BENCH_BIN)

# Idempotent: installs only what is missing, and stays quiet when nothing is.
deps:
	@./scripts/deps.sh

$(BUILD)/libtdcore.a: $(CORE_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^
$(BUILD)/libtdserver.a: $(SERVER_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^
$(BUILD)/tdlab: $(BUILD)/server/main.o $(BUILD)/libtdserver.a $(BUILD)/libtdcore.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libtdserver.a $(BUILD)/libtdcore.a
	$(CC) $(CFLAGS) -o $@ $^ $(TEST_LDLIBS) $(LDLIBS)
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libtdserver.a $(BUILD)/libtdcore.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

run: deps all
	@mkdir -p $(dir $(DB))
	$(BUILD)/tdlab serve --host $(HOST) --port $(PORT) --db $(DB)

# Every test: cmocka unit tests, then the end-to-end script against the real daemon,
# then the headless-Chromium dashboard test.
test: deps all unit e2e browser
unit: all
	@./tests/run_unit.sh $(BUILD)
e2e: all
	@./tests/e2e.sh $(BUILD)/tdlab
browser: all
	@./tests/browser.sh $(BUILD)/tdlab

bench: deps all
	@./scripts/deps.sh bench
	@./bench/run.sh $(BUILD)

# ASan + UBSan build of everything in build/asan, then the unit and end-to-end tests.
sanitize: deps
	$(MAKE) BUILD=build/asan OPT="-O1 -fno-omit-frame-pointer" SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all
	ASAN_OPTIONS=detect_leaks=1 ./tests/run_unit.sh build/asan
	ASAN_OPTIONS=detect_leaks=0 ./tests/e2e.sh build/asan/tdlab
tsan: deps
	@./scripts/deps.sh fuzz
	$(MAKE) BUILD=build/tsan CC=clang OPT="-O1 -g" SAN="-fsanitize=thread" all
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" ./tests/run_unit.sh build/tsan
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" ./tests/e2e.sh build/tsan/tdlab

fuzz: deps
	@./scripts/deps.sh fuzz
	@./tests/fuzz/build.sh

# Reliability (issue 6), a few minutes, so not part of `make test`: 10 rounds of kill -9
# during heavy metric ingestion by concurrent jobs (tests/crash.sh), then a burst of 10,000
# job submissions against a --max-queued cap (tests/burst.sh), then 12,000 hostile requests
# with the server's RSS before and after (tests/hostile_rss.sh). All three always run.
reliability: deps all
	@rc=0; for t in crash burst hostile_rss; do ./tests/$$t.sh $(BUILD)/tdlab || rc=1; done; exit $$rc

# Soak (issue 18), 10 minutes, not part of `make test`: 2 workers training, submissions,
# cancellations, 50 pollers of running jobs, CSV exports; RSS, fds and WAL printed every
# minute and checked flat, every job ends in a final state (tests/soak.sh; SOAK_SECONDS).
soak: all
	@./tests/soak.sh $(BUILD)/tdlab

# Load: wrk, 50 connections for 30 s against the job, metrics and list endpoints while 2
# workers train; must see 0 errors (tests/load.sh).
load: deps all
	@./scripts/deps.sh load
	@./tests/load.sh $(BUILD)/tdlab

# Mutation testing (issue 10), not part of `make test`: scripts/mutants.sh applies each small
# mutation of its list to a copy of the tree in build/mutants, rebuilds there and runs the
# tests that should notice; it prints the table and fails if any mutation survives.
mutants:
	@./scripts/mutants.sh

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
