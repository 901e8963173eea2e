/* Trust inside the board firmware: provisioning copies in the boot blocks, the commit-time check,
 * TRUST_INFO and PROVISION. The rules live in trust.c; this file only wires them to flash and frames.
 * Linked into elk-fw only (it needs firmware/src/main), never into libelk. */
#include "trust/fw_trust.h"

#include <string.h>

#include "trust/trust.h"

/* Key id as 16 hex digits (elk_fmt has no field widths). */
static void key_hex(const uint8_t key[32], char out[2 * ELK_TRUST_KEY_ID_SIZE + 1])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t id[ELK_TRUST_KEY_ID_SIZE];
    elk_trust_key_id(key, id);
    for (int i = 0; i < ELK_TRUST_KEY_ID_SIZE; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * ELK_TRUST_KEY_ID_SIZE] = 0;
}

static const uint8_t *prov_copy(const elk_fw *fw, int i)
{
    return fw->b->flash + (uint64_t)i * fw->b->erase_block + ELK_BOOT_RECORD_SIZE;
}

/* The factory owner key (`scons owner_key=owner.pub`): a board whose flash holds no provisioning record
 * is owned by it, as if record 1 held it, so the first PROVISION must be signed by it and unsigned images
 * do not run; it can be replaced by another owner key, never removed (docs/trust.md "Factory owner key"). */
#ifdef ELK_FACTORY_OWNER_KEY_HEX
static const char factory_hex[] = ELK_FACTORY_OWNER_KEY_HEX;
_Static_assert(sizeof factory_hex == 65, "factory owner key: 64 hex digits");

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int factory_key(uint8_t key[32])
{
    for (int i = 0; i < 32; i++) {
        int hi = hex_digit(factory_hex[2 * i]), lo = hex_digit(factory_hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        key[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}
#else
static int factory_key(uint8_t key[32])
{
    (void)key;
    return 0;
}
#endif

/* The current challenge is used up (after every PROVISION, accepted or not) or belongs to a former power-on:
 * the next TRUST_INFO or PROVISION makes a new one (challenge below). */
static void new_nonce(elk_fw *fw)
{
    fw->trust_nonce_ready = 0;
    fw->trust_challenge_k++;
}

void elk_trust_fw_load(elk_fw *fw)
{
    int active;
    /* elk_fw_layout guarantees erase_block >= boot record + provisioning copy (checked in store). */
    elk_trust_prov_select(prov_copy(fw, 0), prov_copy(fw, 1), ELK_PROV_RECORD_SIZE, &fw->trust, &active);
    new_nonce(fw);  /* power-on or RESET: never the challenge shown before */
    if (active < 0 && factory_key(fw->trust.owner_key)) {
        /* no record: the factory key owns the board. Written as record 1 at the next store, which no
         * other record can be (there is none), so equal sequences still mean equal records. */
        fw->trust.sequence = 1;
        fw->trust.flags = ELK_PROV_FLAG_OWNER_KEY;
        elk_fw_log(fw, "trust: no provisioning record: the factory owner key applies");
    }
    if (fw->trust.flags & ELK_PROV_FLAG_OWNER_KEY) {
        char id[2 * ELK_TRUST_KEY_ID_SIZE + 1];
        key_hex(fw->trust.owner_key, id);
        elk_fw_log(fw, "trust: owner key %s, record %u (copy %d), security floor %u", id,
               (unsigned)fw->trust.sequence, active, (unsigned)fw->trust.security_floor);
    }
}

/* security_counter of the image in slot s, or 0 when the slot holds no valid image. */
static uint32_t slot_counter(const elk_fw *fw, int s)
{
    if (s > 1 || !(fw->rec.slot[s].flags & ELK_SLOT_VALID) || fw->rec.slot[s].image_size < ELK_IMAGE_HEADER_SIZE)
        return 0;
    return elk_le32(fw->b->flash + fw->slot_base[s] + ELK_HDR_SECURITY_COUNTER);
}

static int owned(const elk_fw *fw)
{
    return fw->trust.sequence != 0 && (fw->trust.flags & ELK_PROV_FLAG_OWNER_KEY);
}

/* The active slot's counter counts only when it is authenticated: always on a board without an owner
 * (nothing is), on an owned board once that slot passed the owner check. An image committed before
 * the owner existed (its counter only CRC-protected) must not raise the owner's floor. */
static uint32_t active_counter(const elk_fw *fw)
{
    uint8_t a = fw->rec.active;
    if (owned(fw) && (a > 1 || !fw->trust_ok[a]))
        return 0;
    return slot_counter(fw, a);
}

static uint32_t running_counter(const elk_fw *fw)
{
    uint32_t c = active_counter(fw);
    return c > fw->trust.security_floor ? c : fw->trust.security_floor;
}

/* Make the challenge a re-provisioning request must sign, if there is none yet. With the board's RNG:
 * 16 random bytes. Without one (docs/trust.md "Challenges without an RNG"): SHA-256 over the board id,
 * a counter and the number of challenges since, where the counter is reserved in the provisioning record
 * (+1, written with a boot record store and synced) BEFORE the first challenge of a power-on is shown,
 * so no restart, power cut or RESET can bring a shown challenge back. Only an owned board reserves: on
 * any other the challenge is not checked (the first PROVISION needs no signature). */
static int challenge(elk_fw *fw)
{
    const elk_board *b = fw->b;
    if (fw->trust_nonce_ready)
        return ELK_OK;
    if (b->random && b->random(b->random_ctx, fw->trust_nonce, sizeof fw->trust_nonce) == ELK_OK) {
        fw->trust_nonce_ready = 1;
        return ELK_OK;
    }
    uint32_t base = fw->trust_reserved ? fw->trust_challenge_base : fw->trust.challenge_counter;
    if (owned(fw) && !fw->trust_reserved) {
        if (fw->trust.challenge_counter == UINT32_MAX || fw->trust.sequence == UINT32_MAX) {
            elk_fmt(fw->reason, sizeof fw->reason, "provisioning challenge counter exhausted");
            return ELK_E_RANGE;
        }
        elk_trust_prov saved = fw->trust;
        fw->trust.challenge_counter++;
        fw->trust.sequence++;  /* every change of the record takes a new sequence */
        int rc = elk_fw_record_store(fw);
        if (rc) {
            fw->trust = saved;
            elk_fmt(fw->reason, sizeof fw->reason, "flash write of the challenge counter failed");
            return rc;
        }
        fw->trust_reserved = 1;
        fw->trust_challenge_base = base;
    }
    elk_trust_challenge(b->uid, b->uid ? b->uid_len : 0, base, fw->trust_challenge_k,
                        b->now_us ? b->now_us(b->clock_ctx) : 0, fw->trust_nonce);
    fw->trust_nonce_ready = 1;
    return ELK_OK;
}

int elk_trust_fw_store(elk_fw *fw, uint64_t block_off)
{
    const elk_board *b = fw->b;
    if (b->erase_block < ELK_BOOT_RECORD_SIZE + ELK_PROV_RECORD_SIZE)
        return ELK_E_RANGE;
    uint32_t c = active_counter(fw);
    if (c > fw->trust.security_floor) {
        /* committed: never accept anything older again. Every content change takes a new sequence
         * (a record without owner key starts at 1), so two copies with one sequence are identical. */
        fw->trust.security_floor = c;
        fw->trust.sequence++;
    }
    if (fw->trust.sequence == 0)
        return ELK_OK;
    uint8_t buf[ELK_PROV_RECORD_SIZE];
    elk_trust_prov_encode(&fw->trust, buf);
    int rc = b->flash_write(b->flash_ctx, block_off + ELK_BOOT_RECORD_SIZE, buf, sizeof buf);
    return rc ? rc : b->flash_sync(b->flash_ctx);
}

static int fw_check(elk_fw *fw, const uint8_t *img, uint64_t size, const uint8_t *digest, uint64_t digest_len)
{
    int warning = 0;
    int rc = elk_trust_check_image_hashed(img, size, &fw->trust, running_counter(fw), digest, digest_len,
                                          &warning, fw->reason, sizeof fw->reason);
    if (rc)
        elk_fw_log(fw, "trust: image refused: %s", fw->reason);
    else if (warning)
        elk_fw_log(fw, "trust: warning: %s", fw->reason);
    return rc;
}

int elk_trust_fw_check(elk_fw *fw, const uint8_t *img, uint64_t size)
{
    return fw_check(fw, img, size, NULL, 0);
}

int elk_trust_fw_check_slot_hashed(elk_fw *fw, uint8_t s, const uint8_t *digest, uint64_t digest_len)
{
    if (s > 1 || !(fw->rec.slot[s].flags & ELK_SLOT_VALID))
        return ELK_E_STATE;
    int rc = fw_check(fw, fw->b->flash + fw->slot_base[s], fw->rec.slot[s].image_size, digest, digest_len);
    fw->trust_ok[s] = owned(fw) && rc == ELK_OK;
    if (rc == ELK_OK)
        fw->reason[0] = 0;  /* the warning was given when the image was flashed */
    return rc;
}

int elk_trust_fw_check_slot(elk_fw *fw, uint8_t s)
{
    return elk_trust_fw_check_slot_hashed(fw, s, NULL, 0);
}

uint32_t elk_trust_fw_note(elk_fw *fw, uint32_t off)
{
    uint32_t n = 0;
    while (fw->reason[n] && n < sizeof fw->reason - 1)
        n++;
    uint32_t end = elk_put_bytes(fw->tx, off, sizeof fw->tx, fw->reason, n);
    return end <= sizeof fw->tx ? n : 0;
}

int elk_trust_fw_cmd_info(elk_fw *fw)
{
    int rc = challenge(fw);  /* first: a reservation changes the record's sequence shown here */
    if (rc)
        return rc;
    uint32_t off = 2, cap = sizeof fw->tx;
    uint8_t id[ELK_TRUST_KEY_ID_SIZE];
    elk_trust_key_id(fw->trust.owner_key, id);
    off = elk_put32(fw->tx, off, cap, fw->trust.sequence);
    off = elk_put32(fw->tx, off, cap, fw->trust.flags);
    off = elk_put32(fw->tx, off, cap, fw->trust.security_floor);
    off = elk_put32(fw->tx, off, cap, running_counter(fw));
    off = elk_put_bytes(fw->tx, off, cap, fw->trust.owner_key, 32);
    off = elk_put_bytes(fw->tx, off, cap, id, sizeof id);
    off = elk_put_bytes(fw->tx, off, cap, fw->trust_nonce, sizeof fw->trust_nonce);
    return off <= cap ? (int)off : ELK_E_RANGE;
}

/* Secure boot checks the committed image at the next power-on or RESET: say now, in the PROVISION
 * reply, when the new owner will not accept it (the model that runs keeps running until then). */
static void provision_note(elk_fw *fw)
{
    uint8_t a = fw->rec.active;
    fw->reason[0] = 0;
    if (!(fw->trust.flags & ELK_PROV_FLAG_OWNER_KEY) || a > 1 || !(fw->rec.slot[a].flags & ELK_SLOT_VALID))
        return;
    int rc = elk_trust_fw_check_slot(fw, a);
    if (rc == ELK_OK)
        return;
    elk_fmt(fw->reason, sizeof fw->reason, "the committed image (slot %c) is %s: it will not start after the "
            "next power-on or RESET", 'A' + a,
            rc == ELK_E_AUTH ? "not signed by the new owner key" : "refused under the new record");
}

int elk_trust_fw_cmd_provision(elk_fw *fw, const uint8_t *p, uint32_t n)
{
    if (n != 36 && n != 100) {
        elk_fmt(fw->reason, sizeof fw->reason, "PROVISION payload is %u bytes, expected 36 or 100", (unsigned)n);
        return ELK_E_INVAL;
    }
    int rc = challenge(fw);  /* the one TRUST_INFO showed (made now if it showed none) */
    if (rc)
        return rc;
    elk_trust_prov next, old = fw->trust;
    uint8_t nonce[ELK_TRUST_NONCE_SIZE];
    memcpy(nonce, fw->trust_nonce, sizeof nonce);
    new_nonce(fw);  /* used up, accepted or not */
    uint8_t fkey[32];
    if (!(elk_le32(p) & ELK_PROV_FLAG_OWNER_KEY) && factory_key(fkey)) {
        elk_fmt(fw->reason, sizeof fw->reason, "this firmware has a factory owner key: the owner key can be "
                "changed, not removed");
        return ELK_E_INVAL;
    }
    rc = elk_trust_prov_request(&fw->trust, nonce, p + 4, elk_le32(p), n == 100 ? p + 36 : NULL, &next,
                                    fw->reason, sizeof fw->reason);
    if (rc)
        return rc;
    uint8_t ok_before[2] = { fw->trust_ok[0], fw->trust_ok[1] };
    int first_owner = !owned(fw) && (next.flags & ELK_PROV_FLAG_OWNER_KEY);
    fw->trust = next;
    fw->trust_ok[0] = fw->trust_ok[1] = 0;  /* checked under the old record: check again under the new */
    if (first_owner)
        fw->trust.security_floor = 0;  /* the floor an ownerless board gathered is unauthenticated */
    provision_note(fw);  /* checks the committed slot under the new record (sets trust_ok, the warning) */
    rc = elk_fw_record_store(fw);  /* both records in the older boot block: old state survives a power cut */
    if (rc) {
        fw->trust = old;
        fw->trust_ok[0] = ok_before[0];
        fw->trust_ok[1] = ok_before[1];
        elk_fmt(fw->reason, sizeof fw->reason, "flash write of the provisioning record failed");
        return rc;
    }
    uint8_t id[ELK_TRUST_KEY_ID_SIZE];
    char hex[2 * ELK_TRUST_KEY_ID_SIZE + 1];
    elk_trust_key_id(fw->trust.owner_key, id);
    key_hex(fw->trust.owner_key, hex);
    elk_fw_log(fw, "trust: provisioned record %u, owner key %s%s", (unsigned)fw->trust.sequence, hex,
           fw->trust.flags & ELK_PROV_FLAG_OWNER_KEY ? "" : " (cleared)");
    uint32_t off = 2, cap = sizeof fw->tx;
    off = elk_put32(fw->tx, off, cap, fw->trust.sequence);
    off = elk_put_bytes(fw->tx, off, cap, id, sizeof id);
    if (off > cap)
        return ELK_E_RANGE;
    return (int)(off + elk_trust_fw_note(fw, off));
}
