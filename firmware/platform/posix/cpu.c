/* CPU feature detection for the POSIX platform: cpuid on x86-64, getauxval on aarch64 Linux
 * (not /proc/cpuinfo, which qemu-user does not emulate), nothing elsewhere. */
#include "kernels/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

uint32_t elk_cpu_features(void)
{
    uint32_t f = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        f |= ELK_CPU_AVX2;
    if (__builtin_cpu_supports("fma"))
        f |= ELK_CPU_FMA;
    /* F16C from cpuid leaf 1 (ECX bit 29), usable only where the OS saves ymm state (then "avx"
     * holds): a VM may hide F16C on an AVX2 CPU, and the avx2 table would then SIGILL */
    unsigned a, b, c, d;
    if (__builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C))
        f |= ELK_CPU_F16C;
    return f;
}
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP_ASIMDHP
#define HWCAP_ASIMDHP (1 << 10)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
uint32_t elk_cpu_features(void)
{
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    uint32_t f = ELK_CPU_NEON; /* Advanced SIMD is mandatory on AArch64 */
    if (hw & HWCAP_ASIMDDP)
        f |= ELK_CPU_DOTPROD;
    if (hw & HWCAP_ASIMDHP)
        f |= ELK_CPU_FP16;
    if (hw2 & HWCAP2_I8MM)
        f |= ELK_CPU_I8MM;
    return f;
}
#elif defined(__arm__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12)
#endif
uint32_t elk_cpu_features(void)
{
    return (getauxval(AT_HWCAP) & HWCAP_NEON) ? ELK_CPU_NEON : 0;
}
#else
uint32_t elk_cpu_features(void)
{
    return 0;
}
#endif
