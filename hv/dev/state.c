/* state.c — little-endian device-state encoder/decoder with bounds checks and a sticky error. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "hv/dev/state.h"

void st_enc_init(struct st_enc *e, void *buf, size_t len)
{
	e->p = buf;
	e->len = buf ? len : 0;
	e->off = 0;
	e->overflow = false;
}

static uint8_t *room(struct st_enc *e, size_t n)
{
	uint8_t *q;

	if (e->overflow || n > e->len - e->off) {
		e->overflow = true;
		return NULL;
	}
	q = e->p + e->off;
	e->off += n;
	return q;
}

void st_put_bytes(struct st_enc *e, const void *src, size_t n)
{
	uint8_t *q = room(e, n);

	if (q && n)
		memcpy(q, src, n);
}

void st_put8(struct st_enc *e, uint8_t v)
{
	st_put_bytes(e, &v, 1);
}

void st_put16(struct st_enc *e, uint16_t v)
{
	v = htole16(v);
	st_put_bytes(e, &v, 2);
}

void st_put32(struct st_enc *e, uint32_t v)
{
	v = htole32(v);
	st_put_bytes(e, &v, 4);
}

void st_put64(struct st_enc *e, uint64_t v)
{
	v = htole64(v);
	st_put_bytes(e, &v, 8);
}

void st_pad_to(struct st_enc *e, size_t off)
{
	uint8_t *q;

	if (e->overflow || off <= e->off)
		return;
	q = room(e, off - e->off);
	if (q)
		memset(q, 0, (size_t)(e->p + off - q));
}

int st_enc_done(const struct st_enc *e)
{
	return e->overflow ? -ENOSPC : (int)e->off;
}

void st_dec_init(struct st_dec *d, const void *buf, size_t len)
{
	d->p = buf;
	d->len = buf ? len : 0;
	d->off = 0;
	d->overflow = !buf;
}

void st_get_bytes(struct st_dec *d, void *dst, size_t n)
{
	if (d->overflow || n > d->len - d->off) {
		d->overflow = true;
		if (n)
			memset(dst, 0, n);
		return;
	}
	if (n)
		memcpy(dst, d->p + d->off, n);
	d->off += n;
}

uint8_t st_get8(struct st_dec *d)
{
	uint8_t v;

	st_get_bytes(d, &v, 1);
	return v;
}

uint16_t st_get16(struct st_dec *d)
{
	uint16_t v;

	st_get_bytes(d, &v, 2);
	return le16toh(v);
}

uint32_t st_get32(struct st_dec *d)
{
	uint32_t v;

	st_get_bytes(d, &v, 4);
	return le32toh(v);
}

uint64_t st_get64(struct st_dec *d)
{
	uint64_t v;

	st_get_bytes(d, &v, 8);
	return le64toh(v);
}

void st_skip_to(struct st_dec *d, size_t off)
{
	if (d->overflow || off <= d->off)
		return;
	if (off > d->len) {
		d->overflow = true;
		return;
	}
	d->off = off;
}

size_t st_dec_left(const struct st_dec *d)
{
	return d->overflow ? 0 : d->len - d->off;
}

int st_dec_done(const struct st_dec *d, bool exact)
{
	return d->overflow || (exact && d->off != d->len) ? -EINVAL : 0;
}
