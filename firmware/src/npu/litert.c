/* LiteRT backend: compiles each exported layer's .tflite (in place in the image) into a LiteRT
 * CompiledModel with the context's accelerators (CPU here; a vendor NPU through LiteRT's NPU
 * accelerator on a board) and runs prefill chunks through it. Declines a layer LiteRT cannot compile.
 * Not here: dlopen (platform code fills the API table) or any allocation of our own. */
#include <string.h>

#include "npu/litert.h"

/* LiteRtRankedTensorType is an element type plus a layout of at most 8 dims (< 100 bytes in every
 * release); we only pass it back to LiteRT, so an opaque, generously sized block is enough. */
typedef union { uint8_t bytes[1024]; uint64_t align; } ranked_type;

static void slot_release(const elk_litert_api *api, elk_npu_litert_slot *s)
{
    if (s->in)
        api->destroy_tensor_buffer(s->in);
    if (s->out)
        api->destroy_tensor_buffer(s->out);
    if (s->compiled)
        api->destroy_compiled_model(s->compiled);
    if (s->options)
        api->destroy_options(s->options);
    if (s->model)
        api->destroy_model(s->model);
    memset(s, 0, sizeof *s);
}

static int litert_init(void *vctx, uint32_t n_layers)
{
    elk_npu_litert_ctx *c = vctx;
    if (!c || !c->api || !c->slots || c->n_slots < n_layers)
        return ELK_E_INVAL;
    memset(c->slots, 0, sizeof *c->slots * c->n_slots);
    c->n_on_cpu = 0;
    elk_litert_env_option opt[2];
    int n = 0;
    memset(opt, 0, sizeof opt);
    if (c->dispatch_dir) {
        opt[n].tag = ELK_LITERT_ENV_DISPATCH_LIBRARY_DIR;
        opt[n].value.type = ELK_LITERT_ANY_STRING;
        opt[n++].value.v.s = c->dispatch_dir;
    }
    if (c->log_severity >= 0) {
        opt[n].tag = ELK_LITERT_ENV_MIN_LOGGER_SEVERITY;
        opt[n].value.type = ELK_LITERT_ANY_INT;
        opt[n++].value.v.i = c->log_severity;
    }
    c->last_status = c->api->create_environment(n, n ? opt : NULL, &c->env);
    return c->last_status == 0 ? ELK_OK : ELK_E_IO;
}

/* One tensor buffer for signature input/output `index`; its packed size must be `bytes`. */
static int make_buffer(elk_npu_litert_ctx *c, elk_npu_litert_slot *s, int output, size_t bytes, void **out)
{
    const elk_litert_api *api = c->api;
    void *sig = NULL, *tensor = NULL, *req = NULL;
    ranked_type type;
    size_t packed = 0;
    memset(&type, 0, sizeof type);
    int st = api->get_model_signature(s->model, 0, &sig);
    if (st == 0)
        st = output ? api->get_signature_output_tensor_by_index(sig, 0, &tensor)
                    : api->get_signature_input_tensor_by_index(sig, 0, &tensor);
    if (st == 0)
        st = api->get_ranked_tensor_type(tensor, type.bytes);
    if (st == 0)
        st = output ? api->get_compiled_model_output_buffer_requirements(s->compiled, 0, 0, &req)
                    : api->get_compiled_model_input_buffer_requirements(s->compiled, 0, 0, &req);
    if (st == 0)
        st = api->create_managed_tensor_buffer_from_requirements(c->env, type.bytes, req, out);
    if (st == 0)
        st = api->get_tensor_buffer_packed_size(*out, &packed);
    c->last_status = st;
    if (st != 0)
        return ELK_E_IO;
    return packed == bytes ? ELK_OK : ELK_E_UNSUPPORTED;
}

/* Compile the layer's subgraph now; a layer LiteRT cannot take is declined (CPU runs it). */
static int litert_accepts(void *vctx, int op, const elk_npu_layer *L)
{
    elk_npu_litert_ctx *c = vctx;
    if (op != ELK_NPU_OP_FC_INT8 || !c || !c->env || L->id >= c->n_slots)
        return 0;
    const elk_litert_api *api = c->api;
    elk_npu_litert_slot *s = &c->slots[L->id];
    int st = api->create_model_from_buffer(c->env, L->tflite, L->tflite_size, &s->model);
    if (st == 0)
        st = api->create_options(&s->options);
    if (st == 0)
        st = api->set_options_hardware_accelerators(s->options, c->accelerators ? c->accelerators
                                                                                : ELK_LITERT_ACCEL_CPU);
    if (st == 0)
        st = api->create_compiled_model(c->env, s->model, s->options, &s->compiled);
    c->last_status = st;
    int rc = st == 0 ? ELK_OK : ELK_E_IO;
    if (rc == ELK_OK)
        rc = make_buffer(c, s, 0, (size_t)L->chunk * L->cols, &s->in);
    if (rc == ELK_OK)
        rc = make_buffer(c, s, 1, (size_t)L->chunk * L->rows, &s->out);
    if (rc != ELK_OK) {
        slot_release(api, s);
        return 0;
    }
    _Bool accelerated = 1; /* asked for more than the CPU: did LiteRT find it? (the answer stays right) */
    if ((c->accelerators & ~ELK_LITERT_ACCEL_CPU) && api->compiled_model_is_non_cpu_fully_accelerated &&
        api->compiled_model_is_non_cpu_fully_accelerated(s->compiled, &accelerated) == 0 && !accelerated)
        c->n_on_cpu++;
    return 1;
}

/* Copy n bytes into (to_device) or out of a LiteRT tensor buffer through its host mapping. */
static int copy_buffer(const elk_litert_api *api, void *buffer, void *mem, size_t n, int to_device)
{
    void *host = NULL;
    if (api->lock_tensor_buffer(buffer, &host, to_device ? 1 : 0) != 0 || !host)
        return ELK_E_IO;
    memcpy(to_device ? host : mem, to_device ? mem : host, n);
    return api->unlock_tensor_buffer(buffer) == 0 ? ELK_OK : ELK_E_IO;
}

static int litert_run(void *vctx, const elk_npu_layer *L, const int8_t *x_q, int8_t *y_q)
{
    elk_npu_litert_ctx *c = vctx;
    if (!c || L->id >= c->n_slots || !c->slots[L->id].compiled)
        return ELK_E_STATE;
    elk_npu_litert_slot *s = &c->slots[L->id];
    const elk_litert_api *api = c->api;
    if (copy_buffer(api, s->in, (void *)x_q, (size_t)L->chunk * L->cols, 1) != ELK_OK)
        return ELK_E_IO;
    void *in[1] = { s->in }, *out[1] = { s->out };
    c->last_status = api->run_compiled_model(s->compiled, 0, 1, in, 1, out);
    if (c->last_status != 0)
        return ELK_E_IO;
    return copy_buffer(api, s->out, y_q, (size_t)L->chunk * L->rows, 0);
}

static void litert_deinit(void *vctx)
{
    elk_npu_litert_ctx *c = vctx;
    if (!c || !c->api)
        return;
    for (uint32_t i = 0; c->slots && i < c->n_slots; i++)
        slot_release(c->api, &c->slots[i]);
    if (c->env)
        c->api->destroy_environment(c->env);
    c->env = NULL;
}

const elk_npu_backend elk_npu_litert_backend = {
    .abi_version = ELK_NPU_ABI_VERSION,
    .name = "litert",
    .init = litert_init,
    .accepts = litert_accepts,
    .run_linear_chunk = litert_run,
    .chunk_seconds = NULL,
    .deinit = litert_deinit,
};
