/* store.h — the guest's one key-value store (UDP kv, Redis RESP and HTTP share it), in guest RAM. */
#ifndef DOPPEL_GUEST_STORE_H
#define DOPPEL_GUEST_STORE_H

#include "guest.h"

#define KVS_KEY_MAX 32 /* bytes, 1..32, any byte values */
#define KVS_VAL_MAX 64 /* bytes, 0..64 */
#define KVS_SLOTS 4096 /* open addressing, linear probing, backward-shift deletion */

struct kvs_ent {
	uint8_t klen, vlen; /* klen 0 = empty slot */
	char key[KVS_KEY_MAX];
	char val[KVS_VAL_MAX];
};

enum { KVS_OK = 0, KVS_FULL = -1, KVS_TOOLONG = -2, KVS_NOTINT = -3, KVS_OVERFLOW = -4, KVS_BADKEY = -5 };

const struct kvs_ent *kvs_get(const char *key, size_t klen); /* NULL if missing */
int kvs_set(const char *key, size_t klen, const char *val, size_t vlen);
/* Add by to the decimal integer at key (missing = 0); the new value in *out. */
int kvs_incr(const char *key, size_t klen, int64_t by, int64_t *out);
bool kvs_del(const char *key, size_t klen);
uint32_t kvs_count(void);
void kvs_flush(void);

int dec_u64(const char *s, size_t len, uint64_t *out);
int dec_i64(const char *s, size_t len, int64_t *out);
size_t fmt_u64(char *o, uint64_t v);
size_t fmt_i64(char *o, int64_t v);

/* nondet=N on the command line (docs/guest.md): true for every Nth reply of the KV, RESP and HTTP
 * services, which then carry the TSC, a value two copies of the VM never share (COLO tests). */
bool kv_nondet(void);

#endif
