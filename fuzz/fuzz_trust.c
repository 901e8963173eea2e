/* libFuzzer harness: the trust checks a board runs on received bytes: trailer parse, the commit
 * decision with a provisioned key (fixed below; the seeds are signed with it), the A/B
 * provisioning-record selection and a re-provisioning request. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trust/trust.h"

/* Public half of the fixed fuzz key: Ed25519 seed = 32 bytes of 0x42 (fuzz/make_seeds.py). */
static const uint8_t fuzz_pub[32] = {
    0x21, 0x52, 0xf8, 0xd1, 0x9b, 0x79, 0x1d, 0x24, 0x45, 0x32, 0x42, 0xe1, 0x5f, 0x2e, 0xab, 0x6c,
    0xb7, 0xcf, 0xfa, 0x7b, 0x6a, 0x5e, 0xd3, 0x00, 0x97, 0x96, 0x0e, 0x06, 0x98, 0x81, 0xdb, 0x12,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    char reason[160];
    int warning;

    elk_trust_trailer t;
    elk_trust_trailer_parse(&t, buf, size, reason, sizeof reason);

    elk_trust_prov p = {.sequence = 1, .flags = ELK_PROV_FLAG_OWNER_KEY, .security_floor = 0};
    memcpy(p.owner_key, fuzz_pub, 32);
    elk_trust_check_image(buf, size, &p, 1, &warning, reason, sizeof reason);
    elk_trust_prov none = {0};
    elk_trust_check_image(buf, size, &none, 0, &warning, reason, sizeof reason);

    if (size >= 2 * ELK_PROV_RECORD_SIZE) {
        elk_trust_prov cur, next;
        int active;
        elk_trust_prov_select(buf, buf + ELK_PROV_RECORD_SIZE, ELK_PROV_RECORD_SIZE, &cur, &active);
        if (size >= 2 * ELK_PROV_RECORD_SIZE + 32 + 4 + 64) {
            const uint8_t *q = buf + 2 * ELK_PROV_RECORD_SIZE;
            uint32_t flags = q[32];
            uint8_t nonce[ELK_TRUST_NONCE_SIZE] = {0};  /* the board's challenge: after the signature */
            size_t rest = size - (2 * ELK_PROV_RECORD_SIZE + 32 + 4 + 64);
            memcpy(nonce, q + 100, rest < sizeof nonce ? rest : sizeof nonce);
            elk_trust_prov_request(&cur, nonce, q, flags, q + 36, &next, reason, sizeof reason);
        }
    }
    free(buf);
    return 0;
}
