/* state.h — the one little-endian device-state encoder/decoder: size checks, sticky error. */
#ifndef DOPPEL_HV_DEV_STATE_H
#define DOPPEL_HV_DEV_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Every device's save/restore (hv_dev_ops) writes and reads its record with these. Values are
 * little endian whatever the host; a put that would pass the end of the buffer writes nothing and
 * sets the sticky `overflow`, after which every put is a no-op; a get past the end returns 0 (and
 * zero bytes) and sets `overflow` likewise. So a device encodes or decodes its whole record without
 * checking each step, then asks st_enc_done / st_dec_done once.
 */

struct st_enc {
	uint8_t *p;
	size_t len, off;
	bool overflow;
};

struct st_dec {
	const uint8_t *p;
	size_t len, off;
	bool overflow;
};

void st_enc_init(struct st_enc *e, void *buf, size_t len);
void st_put8(struct st_enc *e, uint8_t v);
void st_put16(struct st_enc *e, uint16_t v);
void st_put32(struct st_enc *e, uint32_t v);
void st_put64(struct st_enc *e, uint64_t v);
void st_put_bytes(struct st_enc *e, const void *src, size_t n);
/* Zero bytes up to offset `off` from the start (no-op when already past it). */
void st_pad_to(struct st_enc *e, size_t off);
/* Bytes written, or -ENOSPC if any put overflowed. */
int st_enc_done(const struct st_enc *e) __attribute__((warn_unused_result));

void st_dec_init(struct st_dec *d, const void *buf, size_t len);
uint8_t st_get8(struct st_dec *d);
uint16_t st_get16(struct st_dec *d);
uint32_t st_get32(struct st_dec *d);
uint64_t st_get64(struct st_dec *d);
void st_get_bytes(struct st_dec *d, void *dst, size_t n);
/* Skip to offset `off` from the start (overflow when past the end; no-op when already past it). */
void st_skip_to(struct st_dec *d, size_t off);
/* Bytes not yet read (0 after an overflow). */
size_t st_dec_left(const struct st_dec *d);
/* 0 when every get was in bounds and, if `exact`, the whole buffer was consumed; else -EINVAL. */
int st_dec_done(const struct st_dec *d, bool exact) __attribute__((warn_unused_result));

#endif
