# doppel — build, test, demo.  `make` builds build/doppel, build/doppel-kv and build/guest.elf.
#
# Sources are found by wildcard so a new file needs no Makefile edit:
#   common/ hv/ replication/ migrate/ netbuf/ vmm/ tools/common/  -> build/libdoppel.a
#   tools/doppel/*.c                                   -> build/doppel      (one file per CLI verb)
#   tools/kv/*.c                                       -> build/doppel-kv
#   guest/*.c guest/*.S                                -> build/guest.elf   (freestanding PVH ELF)
#   tests/unit/test_*.c                                -> build/tests/test_* (cmocka, one binary each)
#   tests/fuzz/fuzz_*.c                                -> build-fuzz/fuzz_* (clang libFuzzer)

B       ?= build
CC      ?= gcc
PKGS    := libzstd libev libnl-route-3.0 json-c libxxhash libcurl libmicrohttpd libsystemd gnutls libseccomp libcap-ng
# libev ships no .pc file in Debian; pkg-config failures for it are harmless (header in /usr/include).
PKG_CFLAGS := $(shell pkg-config --cflags libnl-route-3.0 json-c libzstd libxxhash libcurl libmicrohttpd libsystemd gnutls libseccomp libcap-ng 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs libnl-route-3.0 json-c libzstd libxxhash libcurl libmicrohttpd libsystemd gnutls libseccomp libcap-ng 2>/dev/null)

# The one version string: `git describe` when the tree has a tag, else VERSION_BASE plus the commit
# (and -dirty for uncommitted changes). `doppel --version` prints it.
VERSION_BASE := 0.16.0
VERSION ?= $(shell v=$$(git describe --tags --dirty 2>/dev/null) && echo $$v || \
	{ h=$$(git rev-parse --short HEAD 2>/dev/null); d=$$(git diff --quiet HEAD 2>/dev/null || echo -dirty); \
	  echo $(VERSION_BASE)$${h:+-g$$h$$d}; })

# make install (PREFIX, DESTDIR as usual)
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  := $(PREFIX)/bin
MANDIR  := $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
OCFDIR  ?= $(PREFIX)/lib/ocf/resource.d/doppel
COMPDIR ?= $(PREFIX)/share/bash-completion/completions
OPT     ?= -O2
CFLAGS  := -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -I. $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := $(PKG_LIBS) -lev -lpthread -lm $(EXTRA_LDFLAGS)

LIB_DIRS := common hv hv/kvm hv/dev replication migrate netbuf vmm tools/common
LIB_SRC  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
CLI_SRC  := $(wildcard tools/doppel/*.c) tools/kv/kv_proto.c tools/kv/kv_client.c
KV_SRC   := $(wildcard tools/kv/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
HDRS     := $(foreach d,$(LIB_DIRS) tools/doppel tools/kv,$(wildcard $(d)/*.h))

LIB_OBJ  := $(LIB_SRC:%.c=$(B)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(B)/obj/%.o)
KV_OBJ   := $(KV_SRC:%.c=$(B)/obj/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

PYTEST  := /usr/bin/python3 -m pytest

.PHONY: all deps check unit system asan fuzz demo bench soak scale clean format format-check install man FORCE
all: deps
	@$(MAKE) --no-print-directory binaries

binaries: $(B)/doppel $(B)/doppel-kv $(B)/guest.elf

deps:
	@scripts/deps.sh

$(B)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# build/gen/doppel_version.h changes only when the version does, so main.o is rebuilt only then.
$(B)/gen/doppel_version.h: FORCE
	@mkdir -p $(dir $@)
	@echo '#define DOPPEL_VERSION "$(VERSION)"' > $@.tmp; cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp
$(B)/obj/tools/doppel/main.o: $(B)/gen/doppel_version.h
$(B)/obj/tools/doppel/main.o: CFLAGS += -I$(B)/gen

$(B)/libdoppel.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/doppel: $(CLI_OBJ) $(B)/libdoppel.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(B)/libdoppel.a $(LDLIBS)

$(B)/doppel-kv: $(KV_OBJ) $(B)/libdoppel.a
	$(CC) $(CFLAGS) -o $@ $(KV_OBJ) $(B)/libdoppel.a $(LDLIBS)

$(B)/tests/%: tests/unit/%.c $(B)/libdoppel.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(B)/libdoppel.a $(LDLIBS) -lcmocka

include guest/guest.mk

# ---- man page and install ------------------------------------------------------------------------
# doppel(1) has one source, docs/doppel.1.scd (scdoc).
man: $(B)/doppel.1
$(B)/doppel.1: docs/doppel.1.scd
	@mkdir -p $(dir $@)
	scdoc < $< > $@

install: $(B)/doppel $(B)/doppel.1
	install -D -m 0755 $(B)/doppel $(DESTDIR)$(BINDIR)/doppel
	install -D -m 0644 $(B)/doppel.1 $(DESTDIR)$(MANDIR)/man1/doppel.1
	sed 's|@BINDIR@|$(BINDIR)|g' scripts/doppel@.service > $(B)/doppel@.service
	install -D -m 0644 $(B)/doppel@.service $(DESTDIR)$(UNITDIR)/doppel@.service
	sed 's|@BINDIR@|$(BINDIR)|g' scripts/ocf-doppel > $(B)/ocf-doppel
	install -D -m 0755 $(B)/ocf-doppel $(DESTDIR)$(OCFDIR)/doppel
	install -D -m 0644 scripts/doppel.bash-completion $(DESTDIR)$(COMPDIR)/doppel

# ---- tests -------------------------------------------------------------------------------------
unit: $(UNIT_BIN) $(B)/guest.elf
	@rc=0; for t in $(UNIT_BIN); do DOPPEL_BUILD=$(abspath $(B)) $$t || rc=1; done; exit $$rc

system: binaries
	DOPPEL_BUILD=$(abspath $(B)) $(PYTEST) -q -p no:cacheprovider tests/system $(PYTEST_ARGS)

FUZZ_SECONDS ?= 5
fuzz-build:
	@$(MAKE) --no-print-directory B=build-fuzz CC=clang OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -DDOPPEL_FUZZ" build-fuzz/libdoppel.a
	@mkdir -p build-fuzz/fuzz
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang -std=gnu11 -O1 -g -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	    $$f build-fuzz/libdoppel.a $(LDLIBS) -o build-fuzz/fuzz/$$n || exit 1; done

# `make fuzz FUZZ_SECONDS=600` fuzzes for as long as asked; make check runs each target briefly.
fuzz: deps fuzz-build
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); mkdir -p build-fuzz/corpus/$$n; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  seeds=; [ -d tests/fuzz/corpus/$$n ] && seeds=tests/fuzz/corpus/$$n; \
	  build-fuzz/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
	    build-fuzz/corpus/$$n $$seeds 2>build-fuzz/$$n.log >/dev/null \
	    || { tail -40 build-fuzz/$$n.log; exit 1; }; done

check: deps
	@scripts/format-check.sh
	@$(MAKE) --no-print-directory binaries $(UNIT_BIN)
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(or $(CHECK_FUZZ_SECONDS),3)
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory system

asan: deps
	@$(MAKE) --no-print-directory B=build-asan OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" binaries unit system

soak: binaries
	DOPPEL_BUILD=$(abspath $(B)) DOPPEL_SOAK=$(or $(N),200) $(PYTEST) -q -p no:cacheprovider tests/system -k soak

# `make scale N=1000`: the fleet scale bench (bench/scale_bench.sh): N VMs of 16 MiB with a KV service each,
# versus QEMU microvm; make check runs a short version (tests/system/test_scale.py, 20 VMs).
scale: binaries
	N=$(or $(N),1000) bench/scale_bench.sh

demo: deps
	@$(MAKE) --no-print-directory binaries
	@scripts/demo.sh

bench: binaries
	@for s in bench/*.sh; do echo "== $$s"; $$s || exit 1; done

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@scripts/format-check.sh

clean:
	rm -rf build build-asan build-fuzz
