/* POSIX side of the LiteRT backend: dlopen()s libLiteRt.so (the one the ai-edge-litert wheel ships,
 * or a board's vendor build) and fills the core's function table with dlsym(). Not here: any LiteRT
 * call sequence (src/npu/litert.c) or searching for the library (the host tool passes its path). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "npu/litert.h"
#include "npu_host.h"

static elk_litert_api g_api;
static void *g_handle;

#define BIND(field, symbol)                                                                 \
    do {                                                                                    \
        void *f_ = dlsym(h, symbol);                                                        \
        if (!f_) {                                                                          \
            snprintf(err, errcap, "%s: missing symbol %s (not a LiteRT C API library)", path, symbol); \
            dlclose(h);                                                                     \
            return ELK_E_UNSUPPORTED;                                                       \
        }                                                                                   \
        memcpy(&api.field, &f_, sizeof f_);                                                 \
    } while (0)

int elk_host_litert_load(const char *path, char *err, int errcap)
{
    elk_litert_api api;
    if (g_handle)
        return ELK_OK; /* one library per process: LiteRT keeps global registries */
    if (!path || !path[0]) {
        snprintf(err, errcap, "no LiteRT library path given");
        return ELK_E_INVAL;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errcap, "cannot load %s: %s", path, dlerror());
        return ELK_E_IO;
    }
    BIND(create_environment, "LiteRtCreateEnvironment");
    BIND(destroy_environment, "LiteRtDestroyEnvironment");
    BIND(create_model_from_buffer, "LiteRtCreateModelFromBuffer");
    BIND(destroy_model, "LiteRtDestroyModel");
    BIND(create_options, "LiteRtCreateOptions");
    BIND(destroy_options, "LiteRtDestroyOptions");
    BIND(set_options_hardware_accelerators, "LiteRtSetOptionsHardwareAccelerators");
    BIND(create_compiled_model, "LiteRtCreateCompiledModel");
    BIND(destroy_compiled_model, "LiteRtDestroyCompiledModel");
    BIND(get_model_signature, "LiteRtGetModelSignature");
    BIND(get_signature_input_tensor_by_index, "LiteRtGetSignatureInputTensorByIndex");
    BIND(get_signature_output_tensor_by_index, "LiteRtGetSignatureOutputTensorByIndex");
    BIND(get_ranked_tensor_type, "LiteRtGetRankedTensorType");
    BIND(get_compiled_model_input_buffer_requirements, "LiteRtGetCompiledModelInputBufferRequirements");
    BIND(get_compiled_model_output_buffer_requirements, "LiteRtGetCompiledModelOutputBufferRequirements");
    BIND(create_managed_tensor_buffer_from_requirements, "LiteRtCreateManagedTensorBufferFromRequirements");
    BIND(destroy_tensor_buffer, "LiteRtDestroyTensorBuffer");
    BIND(get_tensor_buffer_packed_size, "LiteRtGetTensorBufferPackedSize");
    BIND(lock_tensor_buffer, "LiteRtLockTensorBuffer");
    BIND(unlock_tensor_buffer, "LiteRtUnlockTensorBuffer");
    BIND(run_compiled_model, "LiteRtRunCompiledModel");
    void *opt = dlsym(h, "LiteRtCompiledModelIsNonCpuFullyAccelerated"); /* optional: newer releases */
    memcpy(&api.compiled_model_is_non_cpu_fully_accelerated, &opt, sizeof opt);
    g_api = api;
    g_handle = h;
    return elk_npu_register(&elk_npu_litert_backend);
}

const elk_litert_api *elk_host_litert_api(void)
{
    return g_handle ? &g_api : NULL;
}
