/* The kernel tables compiled into this build and the run-time choice among them.
 * Which ISA files are compiled is decided by the board file (SConstruct defines ELK_KERNELS_<ISA>);
 * which one runs is decided here from the CPU features the platform reports. */
#include <string.h>

#include "kernels.h"

#ifdef ELK_KERNELS_AVX2
extern const elk_kernels elk_kernels_avx2;
#endif
#ifdef ELK_KERNELS_NEON_I8MM
extern const elk_kernels elk_kernels_neon_i8mm;
#endif
#ifdef ELK_KERNELS_NEON_DOTPROD
extern const elk_kernels elk_kernels_neon_dotprod;
#endif
#ifdef ELK_KERNELS_NEON
extern const elk_kernels elk_kernels_neon;
#endif

const elk_kernels *const elk_kernel_tables[] = {
#ifdef ELK_KERNELS_AVX2
    &elk_kernels_avx2,
#endif
#ifdef ELK_KERNELS_NEON_I8MM
    &elk_kernels_neon_i8mm,
#endif
#ifdef ELK_KERNELS_NEON_DOTPROD
    &elk_kernels_neon_dotprod,
#endif
#ifdef ELK_KERNELS_NEON
    &elk_kernels_neon,
#endif
    &elk_kernels_ref,
    NULL,
};

const elk_kernels *elk_kernels_select(uint32_t features, const char *name)
{
    for (int i = 0; elk_kernel_tables[i]; i++) {
        const elk_kernels *k = elk_kernel_tables[i];
        if ((k->requires & features) != k->requires)
            continue;
        if (name == NULL || strcmp(name, k->name) == 0)
            return k;
    }
    return NULL;
}
