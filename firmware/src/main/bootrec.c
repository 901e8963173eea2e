/* Boot record: which slot boots, kept in two copies (flash blocks 0 and 1) with a sequence number
 * and CRC-32, so a power loss while one copy is written leaves the other valid.
 * Layout in docs/protocol.md "Flash layout". Not here: slot contents or verification. */
#include "main/fw.h"
#include "trust/fw_trust.h"

/* Record field offsets (256 bytes, little-endian). */
enum {
    REC_MAGIC = 0, REC_VERSION = 4, REC_SIZE = 6, REC_SEQ = 8, REC_ACTIVE = 12, REC_PREV = 13,
    REC_SLOTS = 16, SLOT_DESC_SIZE = 112, REC_CRC = ELK_BOOT_RECORD_SIZE - 4,
};
/* Slot descriptor offsets. */
enum { DESC_FLAGS = 0, DESC_SIZE = 8, DESC_SHA = 16, DESC_NAME = 48 };

void elk_fw_layout(elk_fw *fw)
{
    const elk_board *b = fw->b;
    uint64_t e = b->erase_block;
    uint64_t first = 2 * e;  /* blocks 0 and 1 hold the record copies */
    uint64_t slot = first < b->flash_size ? (b->flash_size - first) / 2 : 0;
    fw->slot_size = slot / e * e;
    fw->slot_base[0] = first;
    fw->slot_base[1] = first + fw->slot_size;
}

static int record_parse(const uint8_t *p, elk_fw_record *r)
{
    if (elk_le32(p + REC_MAGIC) != ELK_BOOT_MAGIC || elk_le16(p + REC_VERSION) != ELK_BOOT_VERSION ||
        elk_le16(p + REC_SIZE) != ELK_BOOT_RECORD_SIZE || elk_crc32(0, p, REC_CRC) != elk_le32(p + REC_CRC))
        return ELK_E_FORMAT;
    r->seq = elk_le32(p + REC_SEQ);
    r->active = p[REC_ACTIVE] < 2 ? p[REC_ACTIVE] : ELK_PROTO_SLOT_NONE;
    r->prev = p[REC_PREV] < 2 ? p[REC_PREV] : ELK_PROTO_SLOT_NONE;
    for (int s = 0; s < 2; s++) {
        const uint8_t *d = p + REC_SLOTS + s * SLOT_DESC_SIZE;
        r->slot[s].flags = elk_le32(d + DESC_FLAGS);
        r->slot[s].image_size = elk_le64(d + DESC_SIZE);
        for (int i = 0; i < 32; i++)
            r->slot[s].sha256[i] = d[DESC_SHA + i];
        for (int i = 0; i < ELK_PROTO_SLOT_NAME_MAX; i++)
            r->slot[s].name[i] = (char)d[DESC_NAME + i];
        r->slot[s].name[ELK_PROTO_SLOT_NAME_MAX - 1] = 0;
    }
    return ELK_OK;
}

static void record_encode(const elk_fw_record *r, uint8_t *p)
{
    const uint32_t cap = ELK_BOOT_RECORD_SIZE;
    for (uint32_t i = 0; i < cap; i++)
        p[i] = 0;
    elk_put32(p, REC_MAGIC, cap, ELK_BOOT_MAGIC);
    elk_put16(p, REC_VERSION, cap, ELK_BOOT_VERSION);
    elk_put16(p, REC_SIZE, cap, ELK_BOOT_RECORD_SIZE);
    elk_put32(p, REC_SEQ, cap, r->seq);
    p[REC_ACTIVE] = r->active;
    p[REC_PREV] = r->prev;
    for (int s = 0; s < 2; s++) {
        uint32_t d = REC_SLOTS + (uint32_t)s * SLOT_DESC_SIZE;
        elk_put32(p, d + DESC_FLAGS, cap, r->slot[s].flags);
        elk_put64(p, d + DESC_SIZE, cap, r->slot[s].image_size);
        elk_put_bytes(p, d + DESC_SHA, cap, r->slot[s].sha256, 32);
        elk_put_str(p, d + DESC_NAME, cap, r->slot[s].name, ELK_PROTO_SLOT_NAME_MAX);
    }
    elk_put32(p, REC_CRC, cap, elk_crc32(0, p, REC_CRC));
}

/* Newer of two sequence numbers, wrap-safe. */
static int seq_newer(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) > 0;
}

void elk_fw_record_load(elk_fw *fw)
{
    const elk_board *b = fw->b;
    elk_fw_record r[2];
    int ok[2];
    for (int i = 0; i < 2; i++)
        ok[i] = record_parse(b->flash + (uint64_t)i * b->erase_block, &r[i]) == ELK_OK;
    if (ok[0] && (!ok[1] || !seq_newer(r[1].seq, r[0].seq)))
        fw->rec = r[0];
    else if (ok[1])
        fw->rec = r[1];
    else {
        /* blank flash: no record yet; seq 0 so the first store writes copy 0 with seq 1 */
        elk_fw_record blank = { .seq = 0, .active = ELK_PROTO_SLOT_NONE, .prev = ELK_PROTO_SLOT_NONE };
        fw->rec = blank;
    }
    /* A descriptor whose size no longer fits the slot is not trusted. */
    for (int s = 0; s < 2; s++)
        if (fw->rec.slot[s].image_size > fw->slot_size)
            fw->rec.slot[s].flags = 0;
    elk_trust_fw_load(fw);
}

/* Write fw->rec with the next sequence number over the older copy, then sync. The copy holding the
 * current record is never touched, so at every instant one valid record exists. */
int elk_fw_record_store(elk_fw *fw)
{
    const elk_board *b = fw->b;
    elk_fw_record cur;
    int target = 0;
    if (record_parse(b->flash, &cur) == ELK_OK) {
        elk_fw_record other;
        int other_ok = record_parse(b->flash + b->erase_block, &other) == ELK_OK;
        /* copy 0 holds the current record unless copy 1 is valid and newer */
        target = (other_ok && seq_newer(other.seq, cur.seq)) ? 0 : 1;
    }
    fw->rec.seq++;
    uint8_t buf[ELK_BOOT_RECORD_SIZE];
    record_encode(&fw->rec, buf);
    uint64_t off = (uint64_t)target * b->erase_block;
    int rc = b->flash_erase(b->flash_ctx, off, b->erase_block);
    if (rc == ELK_OK)
        rc = elk_trust_fw_store(fw, off);  /* provisioning copy first (synced): see trust/fw_trust.h */
    if (rc == ELK_OK)
        rc = b->flash_write(b->flash_ctx, off, buf, sizeof buf);
    if (rc == ELK_OK)
        rc = b->flash_sync(b->flash_ctx);
    return rc;
}
