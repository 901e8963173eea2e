/* libFuzzer harness: the image parser (elk_image_open) and every accessor a loader calls on an
 * image it accepted: tensors by index and role, metadata keys, the payload hash. Not the model. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "elk/elk.h"

static const char *const meta_keys[] = {"general.name", "general.source", "quant.recipe", "chat.template", ""};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy with no slack, so ASan catches a read one byte past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    elk_image img;
    if (elk_image_open(&img, buf, size) == ELK_OK) {
        elk_tensor t;
        volatile uint8_t sink = 0;
        for (uint32_t i = 0; i < img.n_tensors + 2; i++)
            if (elk_image_tensor(&img, i, &t) == ELK_OK && t.size)
                sink ^= ((const uint8_t *)t.data)[t.size - 1] ^ (uint8_t)strlen(t.name);
        for (int role = 0; role <= ELK_ROLE_COUNT; role++)
            for (int layer = -1; layer <= (int)img.config.n_layers; layer++)
                if (elk_image_find(&img, role, layer, &t) == ELK_OK && t.size)
                    sink ^= ((const uint8_t *)t.data)[0];
        for (size_t k = 0; k < sizeof meta_keys / sizeof *meta_keys; k++) {
            uint32_t len = 0;
            const char *v = elk_image_meta(&img, meta_keys[k], &len);
            if (v && len)
                sink ^= (uint8_t)v[len - 1];
        }
        elk_image_verify(&img);
        (void)sink;
    }
    free(buf);
    return 0;
}
