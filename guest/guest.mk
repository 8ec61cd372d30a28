# guest.mk — build $(B)/guest.elf, the freestanding PVH test guest (included by the top Makefile).
# Deliberately independent of CFLAGS: no sanitizers, no host flags.

GUEST_CC      ?= gcc
GUEST_CFLAGS  := -std=gnu11 -O2 -g -Wall -Wextra -Werror \
		 -ffreestanding -fno-pic -fno-pie -mno-red-zone -nostdlib -fno-stack-protector \
		 -mgeneral-regs-only -fno-asynchronous-unwind-tables -fcf-protection=none \
		 -fno-strict-aliasing
GUEST_LDFLAGS := -nostdlib -no-pie -static -Wl,-T,guest/guest.ld -Wl,--build-id=none \
		 -Wl,-z,noexecstack -Wl,-z,max-page-size=4096
GUEST_SRC     := $(wildcard guest/*.c guest/*.S)
GUEST_OBJ     := $(patsubst guest/%,$(B)/obj/guest/%.o,$(GUEST_SRC))
GUEST_HDRS    := $(wildcard guest/*.h)

$(B)/obj/guest/%.c.o: guest/%.c $(GUEST_HDRS) guest/guest.mk
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -c $< -o $@

$(B)/obj/guest/%.S.o: guest/%.S $(GUEST_HDRS) guest/guest.mk
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -c $< -o $@

$(B)/guest.elf: $(GUEST_OBJ) guest/guest.ld
	$(GUEST_CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ $(GUEST_OBJ)
