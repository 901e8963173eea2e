/* LiteRT backend: runs each layer's .tflite through LiteRT's C API (the CompiledModel calls that
 * libLiteRt.so exports), reached through a function table the platform fills (dlopen on POSIX), so
 * the core never links or opens libraries itself. Handles are opaque void pointers; status 0 = ok.
 * Not here: finding or loading the library (platform/posix/litert_dl.c). */
#ifndef ELK_NPU_LITERT_H
#define ELK_NPU_LITERT_H

#include <stddef.h>
#include <stdint.h>

#include "elk/npu.h"

/* LiteRtHwAccelerators bits (litert_common.h): which accelerators a compiled model may use. */
enum { ELK_LITERT_ACCEL_CPU = 1, ELK_LITERT_ACCEL_GPU = 2, ELK_LITERT_ACCEL_NPU = 4 };

/* LiteRtEnvOption (litert_environment_options.h): a tag and a LiteRtAny (type + 8-byte union).
 * 24 bytes on LP64 and on 32-bit ARM EABI (the union holds an int64, so it is 8-aligned). */
typedef struct elk_litert_any {
    int32_t type; /* kLiteRtAnyType*: 2 int, 8 string */
    union { int64_t i; double d; const char *s; const void *p; } v;
} elk_litert_any;
typedef struct elk_litert_env_option {
    int32_t tag;
    elk_litert_any value;
} elk_litert_env_option;
enum {
    ELK_LITERT_ANY_INT = 2,
    ELK_LITERT_ANY_STRING = 8,
    ELK_LITERT_ENV_DISPATCH_LIBRARY_DIR = 1, /* where the vendor's libLiteRtDispatch_*.so lives */
    ELK_LITERT_ENV_MIN_LOGGER_SEVERITY = 25, /* 0 verbose ... 3 error (LiteRT 2.x) */
};

/* The LiteRT C API functions elk calls, named as exported (LiteRt<Name>). */
typedef struct elk_litert_api {
    int (*create_environment)(int n_options, const elk_litert_env_option *options, void **env);
    void (*destroy_environment)(void *env);
    int (*create_model_from_buffer)(void *env, const void *data, size_t size, void **model);
    void (*destroy_model)(void *model);
    int (*create_options)(void **options);
    void (*destroy_options)(void *options);
    int (*set_options_hardware_accelerators)(void *options, int accelerators);
    int (*create_compiled_model)(void *env, void *model, void *options, void **compiled);
    void (*destroy_compiled_model)(void *compiled);
    int (*get_model_signature)(void *model, size_t index, void **signature);
    int (*get_signature_input_tensor_by_index)(void *signature, size_t index, void **tensor);
    int (*get_signature_output_tensor_by_index)(void *signature, size_t index, void **tensor);
    int (*get_ranked_tensor_type)(void *tensor, void *ranked_type_out);
    int (*get_compiled_model_input_buffer_requirements)(void *compiled, size_t sig, size_t index, void **req);
    int (*get_compiled_model_output_buffer_requirements)(void *compiled, size_t sig, size_t index, void **req);
    int (*create_managed_tensor_buffer_from_requirements)(void *env, const void *ranked_type, void *req,
                                                          void **buffer);
    void (*destroy_tensor_buffer)(void *buffer);
    int (*get_tensor_buffer_packed_size)(void *buffer, size_t *size);
    int (*lock_tensor_buffer)(void *buffer, void **host_addr, int mode); /* mode 0 read, 1 write */
    int (*unlock_tensor_buffer)(void *buffer);
    int (*run_compiled_model)(void *compiled, size_t sig, size_t n_in, void **in, size_t n_out, void **out);
    /* (optional: NULL when the library lacks it) 1 in *yes when no op of the model runs on LiteRT's CPU */
    int (*compiled_model_is_non_cpu_fully_accelerated)(void *compiled, _Bool *yes);
} elk_litert_api;

/* Per exported layer: what LiteRT made for it (all NULL when declined). */
typedef struct elk_npu_litert_slot {
    void *model, *options, *compiled, *in, *out;
} elk_npu_litert_slot;

typedef struct elk_npu_litert_ctx {
    const elk_litert_api *api;   /* filled by the platform */
    int accelerators;            /* ELK_LITERT_ACCEL_* bits; 0 = CPU */
    const char *dispatch_dir;    /* (optional) NULL: LiteRT's default; needed for ELK_LITERT_ACCEL_NPU */
    int log_severity;            /* LiteRT's minimum log severity; < 0: LiteRT's default */
    elk_npu_litert_slot *slots;  /* caller storage, one per NPU section entry */
    uint32_t n_slots;
    void *env;                   /* made by init */
    int last_status;             /* LiteRT status of the last failing call (for the log) */
    uint32_t n_on_cpu;           /* accepted layers LiteRT placed on its own CPU although accelerators asked
                                    for a GPU or NPU (no such accelerator or delegate here): set by accepts */
} elk_npu_litert_ctx;

extern const elk_npu_backend elk_npu_litert_backend;

#endif /* ELK_NPU_LITERT_H */
