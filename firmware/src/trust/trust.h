/* Trust checks on the board: the image signature trailer, Ed25519 owner signatures (libsodium),
 * anti-rollback, and the A/B provisioning record that holds the owner key (docs/trust.md).
 * Not here: flash I/O or the serial protocol; callers pass bytes in and write bytes out. */
#ifndef ELK_TRUST_H
#define ELK_TRUST_H

#include <stddef.h>
#include <stdint.h>

#include "elk/spec.h"

/* Parsed trailer: pointers into the caller's bytes, NULL for absent records. */
typedef struct elk_trust_trailer {
    const uint8_t *key_id;       /* ELK_TRUST_KEY_ID_SIZE bytes */
    const uint8_t *image_sha256; /* 32 bytes: SHA-256 of image [0, image_size) */
    const uint8_t *signature;    /* 64 bytes: Ed25519 over ELK_SIGN_CONTEXT_IMAGE || image SHA-256 */
    uint32_t size;               /* total trailer bytes, head included */
} elk_trust_trailer;

/* Parse the trailer at data[0..avail) (avail may exceed the trailer: erased flash after it).
 * ELK_OK, or ELK_E_FORMAT / ELK_E_BOUNDS with err saying which record is wrong. */
int elk_trust_trailer_parse(elk_trust_trailer *t, const uint8_t *data, uint64_t avail, char *err, size_t cap);

/* One provisioning slot, decoded. flags & ELK_PROV_FLAG_OWNER_KEY: owner_key is set. */
typedef struct elk_trust_prov {
    uint32_t sequence;        /* 0 = no valid record (factory state) */
    uint32_t flags;
    uint32_t security_floor;  /* highest security_counter ever committed */
    uint8_t owner_key[32];
    uint32_t challenge_counter; /* boards without an RNG: the next challenge counter to reserve */
} elk_trust_prov;

/* Decode one ELK_PROV_RECORD_SIZE slot: ELK_OK, ELK_E_FORMAT (erased/garbage), ELK_E_CRC (torn write). */
int elk_trust_prov_decode(elk_trust_prov *p, const uint8_t *slot, uint64_t size);
/* Encode p into out[ELK_PROV_RECORD_SIZE] with magic, version and CRC. */
void elk_trust_prov_encode(const elk_trust_prov *p, uint8_t out[ELK_PROV_RECORD_SIZE]);

/* Pick the valid slot with the higher sequence. *active = 0 or 1, or -1 with *out zeroed when
 * neither slot is valid (unprovisioned board). Returns ELK_OK in every case. The next write goes
 * to slot 1 - *active (slot 0 when -1), so a torn write never damages the record in use. */
int elk_trust_prov_select(const uint8_t *slot0, const uint8_t *slot1, uint64_t slot_size,
                          elk_trust_prov *out, int *active);

/* Build the next record for a provisioning request: new owner key, flags, sequence cur->sequence + 1.
 * When cur holds an owner key the request must carry an Ed25519 signature by it over
 * ELK_SIGN_CONTEXT_PROVISION || new_key[32] || u32 sequence || u32 flags || nonce[ELK_TRUST_NONCE_SIZE]
 * (little-endian). nonce is the board's current challenge (TRUST_INFO): it ties the request to this
 * board, so one captured on the line to another board of the same owner and sequence is refused.
 * ELK_OK, ELK_E_AUTH (missing/wrong signature), ELK_E_INVAL; reason says why. */
int elk_trust_prov_request(const elk_trust_prov *cur, const uint8_t nonce[ELK_TRUST_NONCE_SIZE],
                           const uint8_t new_key[32], uint32_t new_flags, const uint8_t *signature,
                           elk_trust_prov *next, char *reason, size_t cap);

/* The provisioning challenge of a board without an RNG (docs/trust.md "Challenges without an RNG"):
 * the first ELK_TRUST_NONCE_SIZE bytes of SHA-256(ELK_CHALLENGE_CONTEXT || u32 uid_len || uid ||
 * u32 counter || u32 k || u64 clock_us), little-endian. counter is reserved in flash before use
 * (unique per power-on), k counts challenges within that power-on, uid names the board; clock_us adds
 * whatever unpredictability the board's clock has and is not relied on. */
void elk_trust_challenge(const uint8_t *uid, uint32_t uid_len, uint32_t counter, uint32_t k,
                         uint64_t clock_us, uint8_t out[ELK_TRUST_NONCE_SIZE]);

/* Decide whether image[0..avail) may be committed on a board with provisioning record prov
 * (sequence 0 = unprovisioned) and running security counter `running` (max of the committed
 * image's counter and prov->security_floor). Call after the payload hash is verified.
 * Returns ELK_OK (*warning set for an unsigned image on an unprovisioned board), ELK_E_AUTH,
 * ELK_E_ROLLBACK, or ELK_E_FORMAT / ELK_E_CRC / ELK_E_BOUNDS for a bad header; reason: one line. */
int elk_trust_check_image(const uint8_t *image, uint64_t avail, const elk_trust_prov *prov,
                          uint32_t running, int *warning, char *reason, size_t cap);

/* The same, given D = SHA-256(image[0, digest_len)) already computed by the caller (the power-on check
 * hashes the slot anyway): used only when digest_len equals the header's image_size, else D is
 * computed here. digest NULL = compute. */
int elk_trust_check_image_hashed(const uint8_t *image, uint64_t avail, const elk_trust_prov *prov,
                                 uint32_t running, const uint8_t *digest, uint64_t digest_len,
                                 int *warning, char *reason, size_t cap);

/* SHA-256 by libsodium (crypto_hash_sha256): every hash a signature decision rests on (the signed
 * digest D, key ids) is the library's, not the runtime's own util SHA-256. Opaque here so callers
 * (firmware/src/main keeps one in its power-on check) need no sodium.h; trust.c asserts the size. */
typedef struct elk_trust_sha256 {
    _Alignas(8) uint8_t state[112];
} elk_trust_sha256;
void elk_trust_sha256_init(elk_trust_sha256 *s);
void elk_trust_sha256_update(elk_trust_sha256 *s, const uint8_t *p, uint64_t n);
void elk_trust_sha256_final(elk_trust_sha256 *s, uint8_t out[32]);

/* First 8 bytes of SHA-256(key): the key id shown to users and stored in the trailer. */
void elk_trust_key_id(const uint8_t key[32], uint8_t id[ELK_TRUST_KEY_ID_SIZE]);

#endif /* ELK_TRUST_H */
