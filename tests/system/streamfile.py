"""streamfile.py — minimal reader of the doppel checkpoint stream (docs/stream.md) for tests.

It lists records without verifying checksums (the C reader does that): enough to find where a record
sits in a snapshot file, to compare state records of two files, and to craft corrupt copies.
"""
import struct

MAGIC = b"DOPPELSR"
TYPES = {1: "PAGE_DATA", 2: "ZERO_PAGES", 3: "VCPU_STATE", 4: "DEVICE_STATE",
         5: "CHECKPOINT_END", 6: "END"}


class Record:
    def __init__(self, off, rtype, length, body):
        self.off = off          # offset of the 8-byte record header in the file
        self.type = rtype
        self.length = length
        self.body = body

    @property
    def name(self):
        return TYPES.get(self.type & 0x7fffffff, f"type{self.type:#x}")

    @property
    def body_off(self):
        return self.off + 8

    def dev_name(self):
        return self.body[8:40].split(b"\0", 1)[0].decode() if self.type == 4 else None

    def __repr__(self):
        return f"<{self.name} @{self.off} len={self.length}>"


class Stream:
    def __init__(self, data):
        self.data = data
        if data[:8] != MAGIC:
            raise ValueError("not a doppel stream")
        (self.version, self.bom, self.page_size, self.nr_vcpus, self.mem_size, self.nr_regions,
         self.flags) = struct.unpack_from("<IIIIQII", data, 8)
        self.regions = [struct.unpack_from("<QQ", data, 40 + 16 * i) for i in range(self.nr_regions)]
        self.header_len = 40 + 16 * self.nr_regions + 8
        self.records = []
        off = self.header_len
        while off + 8 <= len(data):
            rtype, length = struct.unpack_from("<II", data, off)
            body = data[off + 8: off + 8 + length]
            self.records.append(Record(off, rtype, length, body))
            off += 8 + length + (-length % 8)
            if rtype == 6:
                break
        self.end = off

    def of_type(self, name):
        return [r for r in self.records if r.name == name]

    def page_data(self):
        """(record, count, encoding, [page_idx]) for each PAGE_DATA record."""
        out = []
        for r in self.of_type("PAGE_DATA"):
            count, enc = struct.unpack_from("<II", r.body, 0)
            idx = list(struct.unpack_from(f"<{count}Q", r.body, 8))
            out.append((r, count, enc, idx))
        return out


def read(path):
    with open(path, "rb") as f:
        return Stream(f.read())
