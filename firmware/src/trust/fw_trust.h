/* Trust inside the board firmware: the provisioning record copies beside the boot record copies,
 * the commit-time image check, and the TRUST_INFO / PROVISION commands (docs/trust.md).
 * Not here: the checks themselves (trust.c) or the boot record and slots (firmware/src/main). */
#ifndef ELK_FW_TRUST_H
#define ELK_FW_TRUST_H

#include "main/fw.h"

/* Read both provisioning copies (flash block i at offset ELK_BOOT_RECORD_SIZE) into fw->trust.
 * Called at the end of elk_fw_record_load. */
void elk_trust_fw_load(elk_fw *fw);

/* Program the provisioning copy into the freshly erased boot block at block_off, then sync, BEFORE
 * the boot record copy is written: a valid boot record copy thus always implies a complete
 * provisioning copy beside it. Also raises the security floor to the active slot's counter (a new
 * record sequence then: equal sequences always mean equal records).
 * Nothing is written while the board has no record (erased = unprovisioned). */
int elk_trust_fw_store(elk_fw *fw, uint64_t block_off);

/* The commit decision for the image at img[0..size) (payload hash already verified).
 * ELK_OK (fw->reason may hold a warning), ELK_E_AUTH or ELK_E_ROLLBACK with fw->reason set. */
int elk_trust_fw_check(elk_fw *fw, const uint8_t *img, uint64_t size);
/* The same for an image already in slot s (COMMIT, ROLLBACK). */
int elk_trust_fw_check_slot(elk_fw *fw, uint8_t s);
/* The same with D = SHA-256(slot[0, digest_len)) already computed (the power-on check hashes the slot
 * anyway, so a big image is not hashed twice while the protocol waits). */
int elk_trust_fw_check_slot_hashed(elk_fw *fw, uint8_t s, const uint8_t *digest, uint64_t digest_len);

/* Copy fw->reason (a warning) into fw->tx at off; returns the bytes added. */
uint32_t elk_trust_fw_note(elk_fw *fw, uint32_t off);

/* TRUST_INFO: () -> u32 sequence, u32 flags, u32 security_floor, u32 running_counter,
 *   u8 owner_key[32], u8 key_id[8]. Returns the response length. */
int elk_trust_fw_cmd_info(elk_fw *fw);
/* PROVISION: u32 flags, u8 key[32] [, u8 signature[64] by the current owner key]
 *   -> u32 new sequence, u8 key_id[8] [, a warning (UTF-8) when the committed image will not pass
 *   secure boot under the new record]. */
int elk_trust_fw_cmd_provision(elk_fw *fw, const uint8_t *p, uint32_t n);

#endif /* ELK_FW_TRUST_H */
