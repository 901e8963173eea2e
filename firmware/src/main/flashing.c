/* Flash commands: write an image into the inactive slot block by block, copy unchanged blocks from
 * the other slot, report block hashes (skip and resume), verify the SHA-256 and record the slot.
 * Each handler fills fw->tx after the i16 status and returns its length or a negative status. */
#include "main/fw.h"
#include "trust/fw_trust.h"

static uint8_t target_slot(const elk_fw *fw)
{
    return fw->rec.active == 0 ? 1 : 0;
}

/* FLASH_BEGIN: u64 image_size, u8 sha256[32] -> u8 slot, u8 pad[3], u32 block_size, u64 slot_size */
int elk_fw_cmd_flash_begin(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (n < 40)
        return ELK_E_INVAL;
    uint64_t size = elk_le64(p);
    uint8_t slot = target_slot(fw);
    uint32_t off = 2, cap = sizeof fw->tx;
    off = elk_put8(fw->tx, off, cap, slot);
    off = elk_put_bytes(fw->tx, off, cap, "\0\0\0", 3);
    off = elk_put32(fw->tx, off, cap, fw->b->erase_block);
    off = elk_put64(fw->tx, off, cap, fw->slot_size);
    if (size == 0 || size > fw->slot_size)
        return ELK_E_RANGE;
    if (fw->running == slot)  /* never rewrite flash a running model reads in place */
        elk_fw_unload(fw);
    elk_fw_slot_desc *d = &fw->rec.slot[slot];
    if (d->flags || fw->rec.prev == slot) {
        /* the slot's old contents stop being trustworthy before the first byte changes */
        d->flags = 0;
        d->image_size = 0;
        if (fw->rec.prev == slot)
            fw->rec.prev = ELK_PROTO_SLOT_NONE;
        int rc = elk_fw_record_store(fw);
        if (rc)
            return rc;
    }
    fw->fs.open = 1;
    fw->fs.slot = slot;
    fw->fs.size = size;
    for (int i = 0; i < 32; i++)
        fw->fs.sha256[i] = p[8 + i];
    fw->fs.cont = UINT64_MAX;
    elk_fw_log(fw, "flash: begin slot %c, %llu bytes", 'A' + slot, (unsigned long long)size);
    return (int)off;
}

/* Program [off, off + n) of the open session's slot. A write starts a block (erasing it) or
 * continues the previous write; every block whose start it crosses is erased first. */
static int session_write(elk_fw *fw, uint64_t off, const uint8_t *data, uint64_t n)
{
    const elk_board *b = fw->b;
    uint64_t e = b->erase_block;
    if (!elk_range_inside(off, n, 0, fw->fs.size))
        return ELK_E_BOUNDS;
    if (off % e != 0 && off != fw->fs.cont)
        return ELK_E_STATE;
    uint64_t base = fw->slot_base[fw->fs.slot];
    for (uint64_t blk = (off + e - 1) / e * e; blk < off + n; blk += e) {
        int rc = b->flash_erase(b->flash_ctx, base + blk, e);
        if (rc)
            return rc;
    }
    int rc = b->flash_write(b->flash_ctx, base + off, data, n);
    if (rc)
        return rc;
    fw->fs.cont = off + n;
    return ELK_OK;
}

/* FLASH_DATA: u64 offset, data -> (nothing) */
int elk_fw_cmd_flash_data(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (!fw->fs.open)
        return ELK_E_STATE;
    if (n < 8)
        return ELK_E_INVAL;
    int rc = session_write(fw, elk_le64(p), p + 8, n - 8);
    return rc ? rc : 2;
}

/* FLASH_COPY: u32 first_block, u32 count -> (nothing). Copies those blocks from the other slot to the
 * same offsets of the target slot (the host saw equal block hashes). */
int elk_fw_cmd_flash_copy(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (!fw->fs.open)
        return ELK_E_STATE;
    if (n < 8)
        return ELK_E_INVAL;
    uint64_t e = fw->b->erase_block;
    uint64_t first = elk_le32(p), count = elk_le32(p + 4);
    if (count * e > FW_WORK_MAX)
        return ELK_E_RANGE;  /* bounded work per request keeps the reply within the host's timeout */
    const uint8_t *src = fw->b->flash + fw->slot_base[fw->fs.slot ^ 1];
    for (uint64_t blk = first; blk < first + count; blk++) {
        uint64_t off = blk * e;
        if (off >= fw->fs.size)
            return ELK_E_BOUNDS;
        uint64_t len = fw->fs.size - off < e ? fw->fs.size - off : e;
        int rc = session_write(fw, off, src + off, len);
        if (rc)
            return rc;
    }
    return 2;
}

/* BLOCK_HASHES: u8 slot, u8 pad[3], u32 first_block, u32 count, u64 limit
 *   -> u32 block_size, u32 count, count x first 8 bytes of SHA-256(block bytes below limit) */
int elk_fw_cmd_block_hashes(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (n < 20 || p[0] > 1)
        return ELK_E_INVAL;
    uint64_t e = fw->b->erase_block;
    uint64_t first = elk_le32(p + 4), count = elk_le32(p + 8), limit = elk_le64(p + 12);
    if (limit > fw->slot_size)
        limit = fw->slot_size;
    uint32_t room = (fw->tx_payload_max - 10) / ELK_PROTO_BLOCK_HASH_SIZE;
    if (count > room)
        count = room;
    if (count > FW_WORK_MAX / e)
        count = FW_WORK_MAX / e ? FW_WORK_MAX / e : 1;  /* bounded hashing per request */
    if (first * e >= limit)
        count = 0;
    else if (count > (limit - first * e + e - 1) / e)
        count = (limit - first * e + e - 1) / e;
    const uint8_t *base = fw->b->flash + fw->slot_base[p[0]];
    uint32_t off = 2, cap = sizeof fw->tx;
    off = elk_put32(fw->tx, off, cap, (uint32_t)e);
    off = elk_put32(fw->tx, off, cap, (uint32_t)count);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t start = (first + i) * e;
        uint64_t len = limit - start < e ? limit - start : e;
        uint8_t h[32];
        elk_sha256(base + start, len, h);
        off = elk_put_bytes(fw->tx, off, cap, h, ELK_PROTO_BLOCK_HASH_SIZE);
    }
    return off <= cap ? (int)off : ELK_E_RANGE;
}

/* FLASH_END: () -> u8 slot. Verifies the whole-image SHA-256 against FLASH_BEGIN's, opens the image
 * and checks its payload hash, then records the slot as valid (not yet active: BOOT + COMMIT). */
int elk_fw_cmd_flash_end(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (!fw->fs.open)
        return ELK_E_STATE;
    const uint8_t *img = fw->b->flash + fw->slot_base[fw->fs.slot];
    uint8_t h[32];
    elk_sha256(img, fw->fs.size, h);
    for (int i = 0; i < 32; i++)
        if (h[i] != fw->fs.sha256[i])
            return ELK_E_HASH;  /* the session stays open: the host can resend blocks */
    elk_image im;
    int rc = elk_image_open(&im, img, fw->fs.size);
    if (rc == ELK_OK && !(im.flags & ELK_IMAGE_FLAG_HAS_TRAILER) && im.size != fw->fs.size) {
        /* bytes after the image that no trailer accounts for: a concatenated or padded file */
        elk_fmt(im.error, sizeof im.error, "%llu bytes follow the image but its header says no trailer follows",
                (unsigned long long)(fw->fs.size - im.size));
        rc = ELK_E_FORMAT;
    }
    if (rc == ELK_OK)
        rc = elk_image_verify(&im);
    if (rc == ELK_OK && (rc = elk_trust_fw_check(fw, img, fw->fs.size)) != ELK_OK)
        elk_fmt(im.error, sizeof im.error, "%s", fw->reason);  /* signature / rollback refusal */
    if (rc) {
        elk_fw_log(fw, "flash: image rejected: %s", im.error);
        elk_fmt(fw->reason, sizeof fw->reason, "%s", im.error);  /* to the host, after the status */
        fw->fs.open = 0;
        return rc;
    }
    elk_fw_slot_desc *d = &fw->rec.slot[fw->fs.slot];
    d->flags = ELK_SLOT_VALID;
    d->image_size = fw->fs.size;
    for (int i = 0; i < 32; i++)
        d->sha256[i] = h[i];
    elk_put_str((uint8_t *)d->name, 0, sizeof d->name, im.name, sizeof d->name);
    d->name[sizeof d->name - 1] = 0;
    rc = elk_fw_record_store(fw);
    if (rc)
        return rc;
    fw->fs.open = 0;
    fw->tx[2] = fw->fs.slot;
    elk_fw_log(fw, "flash: slot %c verified (%s)", 'A' + fw->fs.slot, d->name);
    return 3 + (int)elk_trust_fw_note(fw, 3);  /* a trust warning (unsigned image, no owner key) follows */
}
