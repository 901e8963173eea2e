/* Power-on check of the committed image: before its model starts, the board hashes the active slot and
 * compares it with the SHA-256 the boot record holds (flash wear, a stray write), a few MiB per turn of
 * the main loop so HELLO and INFO keep answering (capability CHECKING); a provisioned board then checks
 * the owner signature and the security floor (secure boot). A damaged slot is dropped from the record,
 * a refused one is kept but not run; the previous image runs if it passes. Not here: flashing
 * (flashing.c), loading a model (gen.c), the signature rules (firmware/src/trust). */
#include "main/fw.h"
#include "trust/fw_trust.h"

#define CHECK_STEP (4u << 20)  /* bytes hashed per turn: ~20 ms native, ~100 ms under qemu-user */
#define CHECK_AT_ONCE 8        /* steps done before serving: a small image is checked and running
                                * before the first frame is read, as if the check were not there */

static void check_slot(elk_fw *fw, int phase, uint8_t s)
{
    fw->check.phase = phase;
    fw->check.slot = s;
    fw->check.done = 0;
    fw->check.digest_len = 0;
    fw->check.sig_end = 0;
    const elk_fw_slot_desc *d = &fw->rec.slot[s];
    if ((d->flags & ELK_SLOT_VALID) && d->image_size >= ELK_IMAGE_HEADER_SIZE) {
        uint64_t e = elk_le64(fw->b->flash + fw->slot_base[s] + ELK_HDR_IMAGE_SIZE);
        fw->check.sig_end = e <= d->image_size ? e : 0;  /* else the trust check says what is wrong */
    }
    elk_trust_sha256_init(&fw->check.sha);
    elk_fmt(fw->boot_error, sizeof fw->boot_error, "checking slot %c", 'A' + s);
}

void elk_fw_check_start(elk_fw *fw)
{
    elk_fw_unload(fw);
    fw->boot_error[0] = 0;
    fw->check.phase = 0;
    fw->check.damaged = 0;
    fw->check.refused = 0;
    if (fw->rec.active < 2)
        check_slot(fw, 1, fw->rec.active);
    for (int i = 0; i < CHECK_AT_ONCE && elk_fw_check_step(fw); i++)
        ;
}

/* After the active slot failed (why in fw->check.why): run the previous slot if it is intact and
 * starts. A damaged active slot is forgotten, and an intact previous one becomes active again, so the
 * next flash writes over the damaged slot rather than over the image that runs. */
static void finish(elk_fw *fw, int fallback_ok)
{
    uint8_t a = fw->rec.active, p = fw->rec.prev;
    fw->check.phase = 0;
    if (fw->check.refused && fallback_ok) {
        /* intact but refused by the trust check: the image that runs becomes active, so the next flash
         * writes over the refused slot; the refused one stays as prev (ROLLBACK checks it again) */
        fw->rec.active = p;
        fw->rec.prev = a;
        if (elk_fw_record_store(fw) != ELK_OK)
            elk_fw_log(fw, "boot: cannot update the boot record");
    }
    if (fw->check.damaged) {
        fw->rec.slot[a].flags = 0;
        fw->rec.slot[a].image_size = 0;
        fw->rec.active = fallback_ok ? p : ELK_PROTO_SLOT_NONE;
        fw->rec.prev = ELK_PROTO_SLOT_NONE;
        if (elk_fw_record_store(fw) != ELK_OK)
            elk_fw_log(fw, "boot: cannot update the boot record");
    }
    if (fallback_ok) {
        elk_fmt(fw->boot_error, sizeof fw->boot_error, "%s; running slot %c", fw->check.why, 'A' + p);
        elk_fw_log(fw, "boot: running the previous slot %c", 'A' + p);
    } else {
        elk_fmt(fw->boot_error, sizeof fw->boot_error, "%s", fw->check.why);
    }
}

/* Secure boot: a board with an owner key runs only an image signed by it whose security counter is not
 * below the floor, whatever was committed before provisioning. ELK_OK, or the refusal with a short
 * reason in why[64] (INFO carries 63 characters; the full reason goes to the log). */
static int slot_trusted(elk_fw *fw, uint8_t s, char *why, uint32_t cap)
{
    if (fw->trust.sequence == 0 || !(fw->trust.flags & ELK_PROV_FLAG_OWNER_KEY))
        return ELK_OK;  /* unprovisioned: any intact image runs, as before provisioning existed */
    int rc = elk_trust_fw_check_slot_hashed(fw, s, fw->check.digest, fw->check.digest_len);
    fw->reason[0] = 0;  /* not a reply to any request */
    if (rc == ELK_E_AUTH)
        elk_fmt(why, cap, "slot %c: not signed by the owner key", 'A' + s);
    else if (rc == ELK_E_ROLLBACK)
        elk_fmt(why, cap, "slot %c: security counter %u below floor %u", 'A' + s,
                (unsigned)elk_le32(fw->b->flash + fw->slot_base[s] + ELK_HDR_SECURITY_COUNTER),
                (unsigned)fw->trust.security_floor);
    else if (rc)
        elk_fmt(why, cap, "slot %c: refused by the trust check: %s", 'A' + s, elk_strerror(rc));
    return rc;
}

static void slot_checked(elk_fw *fw, int intact)
{
    uint8_t s = fw->check.slot;
    char why[sizeof fw->check.why];
    int trusted = intact && slot_trusted(fw, s, why, sizeof why) == ELK_OK;
    if (fw->check.phase == 2) {
        if (intact && !trusted)
            elk_fw_log(fw, "boot: %s", why);
        finish(fw, trusted && elk_fw_boot_slot(fw, s) == ELK_OK);
        return;
    }
    if (trusted && elk_fw_boot_slot(fw, s) == ELK_OK) {
        fw->check.phase = 0;
        return;
    }
    fw->check.damaged = !intact;
    fw->check.refused = intact && !trusted;
    if (fw->check.refused)
        elk_fmt(fw->check.why, sizeof fw->check.why, "%s", why);
    else if (intact)
        elk_fmt(fw->check.why, sizeof fw->check.why, "slot %c: %s", 'A' + s, fw->boot_error);
    else  /* INFO carries 63 characters of it */
        elk_fmt(fw->check.why, sizeof fw->check.why, "slot %c damaged: SHA-256 mismatch", 'A' + s);
    elk_fw_log(fw, "boot: %s", fw->check.why);
    uint8_t p = fw->rec.prev;
    if (p < 2 && p != s && (fw->rec.slot[p].flags & ELK_SLOT_VALID))
        check_slot(fw, 2, p);
    else
        finish(fw, 0);
}

int elk_fw_check_step(elk_fw *fw)
{
    if (!fw->check.phase)
        return 0;
    const elk_fw_slot_desc *d = &fw->rec.slot[fw->check.slot];
    if (!(d->flags & ELK_SLOT_VALID)) {
        slot_checked(fw, 0);
        return fw->check.phase != 0;
    }
    uint64_t left = d->image_size - fw->check.done;
    uint32_t n = left < CHECK_STEP ? (uint32_t)left : CHECK_STEP;
    uint64_t sig_end = fw->check.sig_end;
    if (sig_end > fw->check.done && fw->check.done + n > sig_end)
        n = (uint32_t)(sig_end - fw->check.done);  /* stop at the end of the signed bytes */
    elk_trust_sha256_update(&fw->check.sha, fw->b->flash + fw->slot_base[fw->check.slot] + fw->check.done, n);
    fw->check.done += n;
    if (sig_end && fw->check.done == sig_end) {
        elk_trust_sha256 at_end = fw->check.sha;  /* D = SHA-256 of header + payload, trailer excluded */
        elk_trust_sha256_final(&at_end, fw->check.digest);
        fw->check.digest_len = sig_end;
    }
    if (fw->check.done < d->image_size) {
        elk_fmt(fw->boot_error, sizeof fw->boot_error, "checking slot %c: %u%%", 'A' + fw->check.slot,
                (unsigned)(fw->check.done * 100 / d->image_size));
        return 1;
    }
    uint8_t h[32];
    elk_trust_sha256_final(&fw->check.sha, h);
    int same = 1;
    for (int i = 0; i < 32; i++)
        same &= h[i] == d->sha256[i];
    slot_checked(fw, same);
    return fw->check.phase != 0;
}
