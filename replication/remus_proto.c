/* remus_proto.c — encode/decode of the 16-byte Remus control messages. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/le.h"
#include "replication/remus_proto.h"

void remus_msg_encode(uint8_t *out, uint32_t type, uint64_t value)
{
	le_put32(out, REMUS_MSG_MAGIC);
	le_put32(out + 4, type);
	le_put32(out + 8, (uint32_t)value);
	le_put32(out + 12, (uint32_t)(value >> 32));
}

int remus_msg_decode(const uint8_t *in, struct remus_msg *m)
{
	uint32_t type;

	if (le_get32(in) != REMUS_MSG_MAGIC)
		return -EBADMSG;
	type = le_get32(in + 4);
	if (type < REMUS_MSG_HELLO || type > REMUS_MSG_RUNNING)
		return -EBADMSG;
	m->type = type;
	m->value = (uint64_t)le_get32(in + 8) | (uint64_t)le_get32(in + 12) << 32;
	return 0;
}

bool remus_read_error_is_transport(int rc)
{
	switch (rc) {
	case -EBADMSG: /* checksum, unknown mandatory record, bad length */
	case -EPROTO:
	case -EPROTONOSUPPORT:
	case -EINVAL: /* a field out of range */
	case -E2BIG: /* more pages than the VM has */
	case -ERANGE:
	case -EOVERFLOW:
	case -EILSEQ:
	case -ENOMEM: /* a local failure, not the primary's: keep the replica */
		return false;
	default: /* ETIMEDOUT, EPIPE, ECONNRESET, ECONNABORTED, EHOSTUNREACH, ENETUNREACH, EIO, ... */
		return true;
	}
}

uint64_t remus_hello_value(uint32_t interval_ms, uint32_t timeout_ms)
{
	return (uint64_t)interval_ms << 32 | timeout_ms;
}

int remus_hello_parse(uint64_t value, uint32_t *interval_ms, uint32_t *timeout_ms)
{
	uint32_t iv = (uint32_t)((value & ~REMUS_HELLO_COLO) >> 32), to = (uint32_t)value;

	if (iv < REMUS_MIN_INTERVAL_MS || iv > REMUS_MAX_INTERVAL_MS || to < REMUS_MIN_TIMEOUT_MS ||
	    to > REMUS_MAX_TIMEOUT_MS)
		return -EINVAL;
	*interval_ms = iv;
	*timeout_ms = to;
	return 0;
}

void remus_record_header(uint8_t *out, uint32_t rec_type, uint32_t len)
{
	remus_msg_encode(out, REMUS_MSG_RECORD, (uint64_t)len << 32 | rec_type);
}

void remus_msgbuf_free(struct remus_msgbuf *mb)
{
	free(mb->body);
	mb->body = NULL;
	mb->body_cap = mb->body_want = mb->body_got = 0;
	mb->n = 0;
}

/* A RECORD header arrived: prepare its body. 0, or -EBADMSG / -ENOMEM. */
static int body_start(struct remus_msgbuf *mb, const struct remus_msg *m)
{
	uint32_t len = (uint32_t)(m->value >> 32);
	size_t want = ((size_t)len + 7) & ~(size_t)7;

	if (len > REMUS_MSG_MAX_BODY || !(m->value & 0x80000000u))
		return -EBADMSG; /* records of this channel are optional ones */
	if (want > mb->body_cap) {
		uint8_t *b = realloc(mb->body, want);
		if (!b)
			return -ENOMEM;
		mb->body = b;
		mb->body_cap = want;
	}
	mb->rec = *m;
	mb->rec.rec_type = (uint32_t)m->value;
	mb->rec.rec_len = len;
	mb->body_want = want;
	mb->body_got = 0;
	return 0;
}

int remus_msgbuf_feed(struct remus_msgbuf *mb, const uint8_t *data, size_t len, remus_msg_fn fn, void *opaque)
{
	struct remus_msg m;
	int count = 0;

	while (len) {
		if (mb->body_want) {
			size_t take = mb->body_want - mb->body_got;
			if (take > len)
				take = len;
			memcpy(mb->body + mb->body_got, data, take);
			mb->body_got += take;
			data += take;
			len -= take;
			if (mb->body_got < mb->body_want)
				break;
			mb->body_want = 0;
			mb->rec.body = mb->body;
			fn(opaque, &mb->rec);
			count++;
			continue;
		}
		size_t take = REMUS_MSG_SIZE - mb->n;

		if (take > len)
			take = len;
		memcpy(mb->b + mb->n, data, take);
		mb->n += take;
		data += take;
		len -= take;
		if (mb->n < REMUS_MSG_SIZE)
			break;
		mb->n = 0;
		if (remus_msg_decode(mb->b, &m))
			return -EBADMSG;
		m.rec_type = m.rec_len = 0;
		m.body = NULL;
		if (m.type == REMUS_MSG_RECORD) {
			int rc = body_start(mb, &m);
			if (rc)
				return -EBADMSG;
			if (mb->body_want)
				continue;
			mb->body_want = 0;
			mb->rec.body = mb->body;
			fn(opaque, &mb->rec);
			count++;
			continue;
		}
		fn(opaque, &m);
		count++;
	}
	return count;
}
