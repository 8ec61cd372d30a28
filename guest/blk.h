/* blk.h — the test guest's polling virtio-blk driver (modern v2 or legacy v1 virtio-mmio) and disk work. */
#ifndef DOPPEL_GUEST_BLK_H
#define DOPPEL_GUEST_BLK_H

#include "guest.h"

#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define BLK_S_OK 0
#define BLK_S_IOERR 1
#define BLK_S_UNSUPP 2
#define BLK_S_NONE 0xff /* not completed */
#define BLK_MAX_BATCH 16 /* requests in flight at once (3 descriptors each) */
#define BLK_SECTOR 512u

struct blk_op {
	uint32_t type;
	uint64_t sector;
	void *buf; /* data (identity-mapped guest RAM); NULL for FLUSH */
	uint32_t len; /* bytes, a multiple of 512 (GET_ID: 20) */
	uint8_t status; /* BLK_S_*, set by blk_run */
};

/* Probe the virtio_mmio.device= entries for the first block device and bring it up. Prints
 * `virtio: blk at 0x<base> <v2|legacy v1> sectors=<n> ro=<0|1> flush=<0|1> queue=<n>`. 0 or -1. */
int blk_init(void);
uint64_t blk_sectors(void);
bool blk_readonly(void);
bool blk_has_flush(void);
/* Submit ops[0..n) (n <= BLK_MAX_BATCH) together, notify once, poll until every one completed. */
void blk_run(struct blk_op *ops, unsigned n);

/* work=disk step API (work_disk.c), so another work can interleave the disk oracle. */
int disk_init(void); /* parse dws=/dflush=, print the ring line; 0 or an exit status */
void disk_step(void); /* one batch of record writes (+ flush) and one verify chunk */
void disk_print(uint64_t now); /* the periodic `disk:` line */
uint64_t disk_next_print(void); /* when disk_print is next due (now_ns) */
void disk_final(void); /* the `disk: final ...` line (at secs=) */

#endif
