/* Image signature trailer, owner-key provisioning record and the commit-time trust decision.
 * Ed25519 verification and the SHA-256 it covers are libsodium's; only CRC-32 and byte reads are util's.
 * Every read is bounds-checked against the caller's length; nothing here allocates or does I/O. */
#include "trust/trust.h"

#include <sodium.h>
#include <string.h>

#include "util/util.h"

#define CTX_LEN 16 /* sizeof ELK_SIGN_CONTEXT_* without the NUL */

_Static_assert(sizeof(ELK_SIGN_CONTEXT_IMAGE) - 1 == CTX_LEN, "image signature context is 16 bytes");
_Static_assert(sizeof(ELK_SIGN_CONTEXT_PROVISION) - 1 == CTX_LEN, "provision context is 16 bytes");
_Static_assert(ELK_PROVOFF_CRC32 + 4 == ELK_PROV_RECORD_SIZE, "CRC is the last field of a slot");

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void hex8(const uint8_t *id, char out[2 * ELK_TRUST_KEY_ID_SIZE + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < ELK_TRUST_KEY_ID_SIZE; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * ELK_TRUST_KEY_ID_SIZE] = 0;
}

_Static_assert(sizeof(crypto_hash_sha256_state) <= sizeof(elk_trust_sha256), "elk_trust_sha256 holds libsodium's state");
_Static_assert(_Alignof(crypto_hash_sha256_state) <= 8, "elk_trust_sha256 is 8-byte aligned");

void elk_trust_sha256_init(elk_trust_sha256 *s)
{
    crypto_hash_sha256_init((crypto_hash_sha256_state *)(void *)s->state);
}

void elk_trust_sha256_update(elk_trust_sha256 *s, const uint8_t *p, uint64_t n)
{
    crypto_hash_sha256_update((crypto_hash_sha256_state *)(void *)s->state, p, (unsigned long long)n);
}

void elk_trust_sha256_final(elk_trust_sha256 *s, uint8_t out[32])
{
    crypto_hash_sha256_final((crypto_hash_sha256_state *)(void *)s->state, out);
}

void elk_trust_key_id(const uint8_t key[32], uint8_t id[ELK_TRUST_KEY_ID_SIZE])
{
    uint8_t h[32];
    crypto_hash_sha256(h, key, 32);
    memcpy(id, h, ELK_TRUST_KEY_ID_SIZE);
}

/* ============================================================================================
 * Trailer: u32 magic, u32 total, then records (u16 type, u16 reserved, u32 length, value). */

static int expect_len(uint32_t type)
{
    switch (type) {
    case ELK_TLV_KEY_ID: return ELK_TRUST_KEY_ID_SIZE;
    case ELK_TLV_IMAGE_SHA256: return 32;
    case ELK_TLV_ED25519: return 64;
    default: return -1; /* unknown types are skipped: they carry nothing the board trusts */
    }
}

int elk_trust_trailer_parse(elk_trust_trailer *t, const uint8_t *data, uint64_t avail, char *err, size_t cap)
{
    memset(t, 0, sizeof *t);
    if (avail < ELK_TRAILER_HEAD_SIZE) {
        elk_fmt(err, cap, "trailer: only %llu bytes after the image", (unsigned long long)avail);
        return ELK_E_BOUNDS;
    }
    if (elk_le32(data) != ELK_TRAILER_MAGIC) {
        elk_fmt(err, cap, "trailer: bad magic 0x%x", elk_le32(data));
        return ELK_E_FORMAT;
    }
    uint32_t total = elk_le32(data + 4);
    if (total < ELK_TRAILER_HEAD_SIZE || total > ELK_TRAILER_MAX_SIZE || total > avail) {
        elk_fmt(err, cap, "trailer: total size %u invalid (%llu bytes available)", total,
                (unsigned long long)avail);
        return ELK_E_BOUNDS;
    }
    const uint8_t **slot[4] = { NULL, &t->key_id, &t->image_sha256, &t->signature };
    uint32_t pos = ELK_TRAILER_HEAD_SIZE;
    while (pos < total) {
        if (total - pos < ELK_TRAILER_TLV_HEAD_SIZE) {
            elk_fmt(err, cap, "trailer: record head at +%u cut short", pos);
            return ELK_E_BOUNDS;
        }
        uint32_t type = elk_le16(data + pos), reserved = elk_le16(data + pos + 2);
        uint32_t len = elk_le32(data + pos + 4);
        pos += ELK_TRAILER_TLV_HEAD_SIZE;
        if (len > total - pos) {
            elk_fmt(err, cap, "trailer: record type %u length %u runs past the trailer end", type, len);
            return ELK_E_BOUNDS;
        }
        if (reserved != 0) {
            elk_fmt(err, cap, "trailer: record type %u has non-zero reserved field", type);
            return ELK_E_FORMAT;
        }
        int want = expect_len(type);
        if (want >= 0) {
            if (len != (uint32_t)want) {
                elk_fmt(err, cap, "trailer: record type %u is %u bytes, expected %d", type, len, want);
                return ELK_E_FORMAT;
            }
            if (*slot[type] != NULL) {
                elk_fmt(err, cap, "trailer: duplicate record type %u", type);
                return ELK_E_FORMAT;
            }
            *slot[type] = data + pos;
        }
        pos += len;
    }
    t->size = total;
    return ELK_OK;
}

/* ============================================================================================
 * Provisioning record: two slots, newest valid wins (docs/trust.md "Provisioning record"). */

int elk_trust_prov_decode(elk_trust_prov *p, const uint8_t *slot, uint64_t size)
{
    memset(p, 0, sizeof *p);
    if (slot == NULL || size < ELK_PROV_RECORD_SIZE)
        return ELK_E_BOUNDS;
    if (elk_le32(slot + ELK_PROVOFF_MAGIC) != ELK_PROV_MAGIC ||
        elk_le16(slot + ELK_PROVOFF_VERSION) != ELK_PROV_VERSION ||
        elk_le16(slot + ELK_PROVOFF_SIZE) != ELK_PROV_RECORD_SIZE)
        return ELK_E_FORMAT;
    if (elk_crc32(0, slot, ELK_PROVOFF_CRC32) != elk_le32(slot + ELK_PROVOFF_CRC32))
        return ELK_E_CRC;
    uint32_t seq = elk_le32(slot + ELK_PROVOFF_SEQUENCE);
    if (seq == 0)
        return ELK_E_FORMAT;
    p->sequence = seq;
    p->flags = elk_le32(slot + ELK_PROVOFF_FLAGS);
    p->security_floor = elk_le32(slot + ELK_PROVOFF_SECURITY_FLOOR);
    p->challenge_counter = elk_le32(slot + ELK_PROVOFF_CHALLENGE_COUNTER);
    memcpy(p->owner_key, slot + ELK_PROVOFF_OWNER_KEY, 32);
    return ELK_OK;
}

void elk_trust_prov_encode(const elk_trust_prov *p, uint8_t out[ELK_PROV_RECORD_SIZE])
{
    memset(out, 0, ELK_PROV_RECORD_SIZE);
    put32(out + ELK_PROVOFF_MAGIC, ELK_PROV_MAGIC);
    out[ELK_PROVOFF_VERSION] = ELK_PROV_VERSION;
    out[ELK_PROVOFF_SIZE] = (uint8_t)(ELK_PROV_RECORD_SIZE & 0xFF);
    out[ELK_PROVOFF_SIZE + 1] = (uint8_t)(ELK_PROV_RECORD_SIZE >> 8);
    put32(out + ELK_PROVOFF_SEQUENCE, p->sequence);
    put32(out + ELK_PROVOFF_FLAGS, p->flags);
    memcpy(out + ELK_PROVOFF_OWNER_KEY, p->owner_key, 32);
    put32(out + ELK_PROVOFF_SECURITY_FLOOR, p->security_floor);
    put32(out + ELK_PROVOFF_CHALLENGE_COUNTER, p->challenge_counter);
    put32(out + ELK_PROVOFF_CRC32, elk_crc32(0, out, ELK_PROVOFF_CRC32));
}

int elk_trust_prov_select(const uint8_t *slot0, const uint8_t *slot1, uint64_t slot_size,
                          elk_trust_prov *out, int *active)
{
    elk_trust_prov a, b;
    int ok0 = elk_trust_prov_decode(&a, slot0, slot_size) == ELK_OK;
    int ok1 = elk_trust_prov_decode(&b, slot1, slot_size) == ELK_OK;
    *active = -1;
    memset(out, 0, sizeof *out);
    /* Sequences only grow by one per write, so "higher" is a plain compare (2^32 writes is beyond
     * any flash endurance). */
    if (ok0 && (!ok1 || a.sequence > b.sequence)) {
        *out = a;
        *active = 0;
    } else if (ok1) {
        *out = b;
        *active = 1;
    }
    return ELK_OK;
}

static int ed25519_ok(const uint8_t key[32], const uint8_t *sig, const uint8_t *msg, size_t len)
{
    if (sodium_init() < 0)
        return 0;
    return crypto_sign_verify_detached(sig, msg, len, key) == 0;
}

_Static_assert(sizeof(ELK_CHALLENGE_CONTEXT) - 1 == CTX_LEN, "challenge context is 16 bytes");

void elk_trust_challenge(const uint8_t *uid, uint32_t uid_len, uint32_t counter, uint32_t k,
                         uint64_t clock_us, uint8_t out[ELK_TRUST_NONCE_SIZE])
{
    uint8_t head[CTX_LEN + 4], tail[16], digest[32];
    memcpy(head, ELK_CHALLENGE_CONTEXT, CTX_LEN);
    put32(head + CTX_LEN, uid_len);
    put32(tail, counter);
    put32(tail + 4, k);
    put32(tail + 8, (uint32_t)clock_us);
    put32(tail + 12, (uint32_t)(clock_us >> 32));
    elk_trust_sha256 s;
    elk_trust_sha256_init(&s);
    elk_trust_sha256_update(&s, head, sizeof head);
    if (uid_len)
        elk_trust_sha256_update(&s, uid, uid_len);
    elk_trust_sha256_update(&s, tail, sizeof tail);
    elk_trust_sha256_final(&s, digest);
    memcpy(out, digest, ELK_TRUST_NONCE_SIZE);
}

int elk_trust_prov_request(const elk_trust_prov *cur, const uint8_t nonce[ELK_TRUST_NONCE_SIZE],
                           const uint8_t new_key[32], uint32_t new_flags, const uint8_t *signature,
                           elk_trust_prov *next, char *reason, size_t cap)
{
    if (cur->sequence == UINT32_MAX) {
        elk_fmt(reason, cap, "provisioning sequence exhausted");
        return ELK_E_RANGE;
    }
    if (new_flags & ~(uint32_t)ELK_PROV_FLAG_OWNER_KEY) {
        elk_fmt(reason, cap, "unknown provisioning flags 0x%x", new_flags);
        return ELK_E_INVAL;
    }
    /* A key that is no curve point (or of small order) could never verify a signature: storing it
     * would lock the board until a physical reset. */
    if ((new_flags & ELK_PROV_FLAG_OWNER_KEY) && (sodium_init() < 0 || !crypto_core_ed25519_is_valid_point(new_key))) {
        elk_fmt(reason, cap, "the new owner key is not a valid Ed25519 public key");
        return ELK_E_INVAL;
    }
    uint32_t seq = cur->sequence + 1;
    if (cur->flags & ELK_PROV_FLAG_OWNER_KEY) {
        char id[2 * ELK_TRUST_KEY_ID_SIZE + 1];
        uint8_t kid[ELK_TRUST_KEY_ID_SIZE], msg[CTX_LEN + 32 + 8 + ELK_TRUST_NONCE_SIZE];
        elk_trust_key_id(cur->owner_key, kid);
        hex8(kid, id);
        if (signature == NULL) {
            elk_fmt(reason, cap, "board already has owner key %s: re-provisioning needs a request "
                    "signed by it (elk provision --old-key)", id);
            return ELK_E_AUTH;
        }
        memcpy(msg, ELK_SIGN_CONTEXT_PROVISION, CTX_LEN);
        memcpy(msg + CTX_LEN, new_key, 32);
        put32(msg + CTX_LEN + 32, seq);
        put32(msg + CTX_LEN + 36, new_flags);
        memcpy(msg + CTX_LEN + 40, nonce, ELK_TRUST_NONCE_SIZE);
        if (!ed25519_ok(cur->owner_key, signature, msg, sizeof msg)) {
            elk_fmt(reason, cap, "re-provisioning request not signed by owner key %s over this board's "
                    "challenge and sequence %u", id, seq);
            return ELK_E_AUTH;
        }
    }
    *next = *cur;
    next->sequence = seq;
    next->flags = new_flags;
    memcpy(next->owner_key, new_key, 32);
    if (!(new_flags & ELK_PROV_FLAG_OWNER_KEY))
        memset(next->owner_key, 0, 32);
    return ELK_OK;
}

/* ============================================================================================
 * The commit decision. */

static int header_check(const uint8_t *image, uint64_t avail, uint64_t *image_size, char *reason, size_t cap)
{
    if (avail < ELK_IMAGE_HEADER_SIZE || elk_le32(image + ELK_HDR_MAGIC) != ELK_IMAGE_MAGIC) {
        elk_fmt(reason, cap, "not an elk image (bad magic or shorter than a header)");
        return ELK_E_FORMAT;
    }
    uint32_t hsize = elk_le16(image + ELK_HDR_HEADER_SIZE);
    if (hsize < ELK_IMAGE_HEADER_SIZE || hsize > avail || hsize % 4) {
        elk_fmt(reason, cap, "header_size %u invalid", hsize);
        return ELK_E_FORMAT;
    }
    if (elk_crc32(0, image, hsize - 4) != elk_le32(image + hsize - 4)) {
        elk_fmt(reason, cap, "header CRC mismatch");
        return ELK_E_CRC;
    }
    *image_size = elk_le64(image + ELK_HDR_IMAGE_SIZE);
    if (*image_size < hsize || *image_size > avail) {
        elk_fmt(reason, cap, "image_size %llu outside the %llu bytes received",
                (unsigned long long)*image_size, (unsigned long long)avail);
        return ELK_E_BOUNDS;
    }
    return ELK_OK;
}

static int signature_check(const uint8_t *image, uint64_t image_size, uint64_t avail,
                           const elk_trust_prov *prov, const uint8_t *known, char *reason, size_t cap)
{
    elk_trust_trailer t;
    char id[2 * ELK_TRUST_KEY_ID_SIZE + 1], sid[2 * ELK_TRUST_KEY_ID_SIZE + 1];
    uint8_t kid[ELK_TRUST_KEY_ID_SIZE], digest[32], msg[CTX_LEN + 32];

    elk_trust_key_id(prov->owner_key, kid);
    hex8(kid, id);
    if (!(elk_le32(image + ELK_HDR_FLAGS) & ELK_IMAGE_FLAG_HAS_TRAILER)) {
        elk_fmt(reason, cap, "image is not signed; this board only accepts images signed by owner key %s", id);
        return ELK_E_AUTH;
    }
    char err[96];
    if (elk_trust_trailer_parse(&t, image + image_size, avail - image_size, err, sizeof err) != ELK_OK) {
        elk_fmt(reason, cap, "signature %s", err);
        return ELK_E_AUTH;
    }
    if (t.signature == NULL) {
        elk_fmt(reason, cap, "image trailer holds no Ed25519 signature");
        return ELK_E_AUTH;
    }
    if (known)
        memcpy(digest, known, 32);
    else
        crypto_hash_sha256(digest, image, (unsigned long long)image_size);
    if (t.image_sha256 != NULL && memcmp(t.image_sha256, digest, 32) != 0) {
        elk_fmt(reason, cap, "image bytes changed after signing (header+payload SHA-256 differs from the trailer)");
        return ELK_E_AUTH;
    }
    if (t.key_id != NULL && memcmp(t.key_id, kid, ELK_TRUST_KEY_ID_SIZE) != 0) {
        hex8(t.key_id, sid);
        elk_fmt(reason, cap, "image is signed by key %s, but this board's owner key is %s", sid, id);
        return ELK_E_AUTH;
    }
    memcpy(msg, ELK_SIGN_CONTEXT_IMAGE, CTX_LEN);
    memcpy(msg + CTX_LEN, digest, 32);
    if (!ed25519_ok(prov->owner_key, t.signature, msg, sizeof msg)) {
        elk_fmt(reason, cap, "Ed25519 signature does not verify with owner key %s", id);
        return ELK_E_AUTH;
    }
    return ELK_OK;
}

int elk_trust_check_image(const uint8_t *image, uint64_t avail, const elk_trust_prov *prov,
                          uint32_t running, int *warning, char *reason, size_t cap)
{
    return elk_trust_check_image_hashed(image, avail, prov, running, NULL, 0, warning, reason, cap);
}

int elk_trust_check_image_hashed(const uint8_t *image, uint64_t avail, const elk_trust_prov *prov,
                                 uint32_t running, const uint8_t *digest, uint64_t digest_len,
                                 int *warning, char *reason, size_t cap)
{
    uint64_t image_size = 0;
    *warning = 0;
    if (cap)
        reason[0] = 0;
    int rc = header_check(image, avail, &image_size, reason, cap);
    if (rc != ELK_OK)
        return rc;
    int owned = prov != NULL && prov->sequence != 0 && (prov->flags & ELK_PROV_FLAG_OWNER_KEY);
    if (owned) {
        rc = signature_check(image, image_size, avail, prov, digest_len == image_size ? digest : NULL,
                             reason, cap);
        if (rc != ELK_OK)
            return rc;
    }
    uint32_t counter = elk_le32(image + ELK_HDR_SECURITY_COUNTER);
    if (counter < running) {
        elk_fmt(reason, cap, "image security counter %u is lower than the board's %u (downgrade refused)",
                counter, running);
        return ELK_E_ROLLBACK;
    }
    if (!owned) {
        *warning = 1;
        elk_fmt(reason, cap, "board has no owner key: image accepted without signature check "
                "(run elk provision to require signed images)");
    }
    return ELK_OK;
}
