/* Attention/SwiGLU test driver: every compiled kernel table (that this CPU supports) with its own
 * attend/swiglu slots against ref's, bit for bit (kernels.h's contract), plus ref against a double
 * textbook formula so the inputs are not degenerate. With --bench, times ref and each table on a
 * TinyLlama-shaped head group instead. A host/qemu program (stdio allowed); not part of the firmware.
 *   elk-attn-test [--bench | --count TABLE|none attend|swiglu [POSITIONS]]   exit 0 = all checks passed */
#define _DEFAULT_SOURCE /* clock_gettime, mmap's MAP_ANONYMOUS under -std=c11 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"

#define MAX_HD 64
#define MAX_NQ 20
#define MAX_N 301
#define KV_DIM (2 * MAX_HD + 8) /* cache rows wider than one head; the head sits at column hd */
#define SC_STRIDE (MAX_N + 3)   /* score rows wider than n: the stride is honoured */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static int n_checks, n_failures, textbook_done;

static double rng_unit(void)
{
    rng_state ^= rng_state << 13; /* xorshift64 */
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
}

static float rng_normal(double spread)
{
    return (float)(spread * sqrt(-2.0 * log(rng_unit())) * cos(6.283185307179586 * rng_unit()));
}

static void report(const char *table, const char *what, int cases, long mismatches, int ok)
{
    n_checks++;
    n_failures += !ok;
    printf("check %-13s %-14s cases=%-4d mismatches=%-8ld %s\n", table, what, cases, mismatches, ok ? "ok" : "FAIL");
}

/* ---------------------------------------------------------------------------------------------
 * Attention */

static float kc[MAX_N * KV_DIM], vc[MAX_N * KV_DIM], q[MAX_NQ * MAX_HD];
static float sc_want[MAX_NQ * SC_STRIDE], sc_got[MAX_NQ * SC_STRIDE];
static float out_want[MAX_NQ * MAX_HD], out_got[MAX_NQ * MAX_HD];

/* The tested table reads copies of the cache's n rows that end where an inaccessible page begins:
 * a key or value read at position n or later (a last partial chunk loading whole vectors of rows)
 * stops the program with the case named, instead of passing unseen. */
static float *guarded_end[2]; /* k, v: the first float of the guard page */
static char guard_case[96];
static size_t guard_case_len;

static void on_guard_fault(int sig)
{
    static const char msg[] = "FAIL: attend read the KV cache past position n (guard page): ";
    (void)sig;
    (void)!write(2, msg, sizeof msg - 1);
    (void)!write(2, guard_case, guard_case_len);
    _exit(1);
}

static int guard_init(void)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t rows = ((size_t)MAX_N * KV_DIM * sizeof(float) + page - 1) / page * page;
    for (int b = 0; b < 2; b++) {
        char *m = mmap(NULL, rows + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED || mprotect(m + rows, page, PROT_NONE) != 0)
            return -1;
        guarded_end[b] = (float *)(m + rows);
    }
    signal(SIGSEGV, on_guard_fault);
    signal(SIGBUS, on_guard_fault);
    return 0;
}

static void run_attend(const elk_kernels *k, int hd, int nq, int n, float *sc, float *out)
{
    const float nan = nanf("");
    for (int i = 0; i < MAX_NQ * SC_STRIDE; i++)
        sc[i] = nan;
    for (int i = 0; i < MAX_NQ * MAX_HD; i++)
        out[i] = nan;
    const float *kr = kc, *vr = vc;
    if (k != &elk_kernels_ref && guarded_end[0]) {
        float *kg = guarded_end[0] - (size_t)n * KV_DIM, *vg = guarded_end[1] - (size_t)n * KV_DIM;
        memcpy(kg, kc, (size_t)n * KV_DIM * sizeof(float));
        memcpy(vg, vc, (size_t)n * KV_DIM * sizeof(float));
        kr = kg, vr = vg;
        guard_case_len = (size_t)snprintf(guard_case, sizeof guard_case, "%s hd=%d nq=%d n=%d\n", k->name, hd, nq, n);
    }
    k->attend(hd, nq, n, q, kr + hd, vr + hd, KV_DIM, 1.0f / sqrtf((float)hd), sc, SC_STRIDE, out);
}

/* ref's output within 1e-4 (relative, plus 1e-5) of the double-precision formula. */
static int ref_is_textbook(int hd, int nq, int n)
{
    static double p[MAX_N];
    for (int j = 0; j < nq; j++) {
        double max = -INFINITY, sum = 0.0;
        for (int s = 0; s < n; s++) {
            double d = 0.0;
            for (int i = 0; i < hd; i++)
                d += (double)q[j * hd + i] * kc[s * KV_DIM + hd + i];
            p[s] = d / sqrt((double)hd);
            max = p[s] > max ? p[s] : max;
        }
        for (int s = 0; s < n; s++)
            sum += (p[s] = exp(p[s] - max));
        for (int i = 0; i < hd; i++) {
            double o = 0.0;
            for (int s = 0; s < n; s++)
                o += p[s] / sum * vc[s * KV_DIM + hd + i];
            if (!(fabs(o - out_want[j * hd + i]) <= 1e-4 * fabs(o) + 1e-5))
                return 0;
        }
    }
    return 1;
}

/* Head sizes 8/32/48/64; groups 1/2/3/8/20 (3: a head pair and a lone head); positions 1-9 (every
 * partial last chunk of 8, and of 4, alone and after full ones), 15, 17, 65 (one past a 64-position
 * value chunk) and 301; spreads 0.1/3/40 (flat to peaked: at 40 most softmax weights underflow
 * to 0 and some are subnormal). */
static const int hds[] = {8, 32, 48, 64}, nqs[] = {1, 2, 3, 8, 20}, ns[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 17, 65, MAX_N};
#define N_NQS ((int)(sizeof nqs / sizeof nqs[0]))
#define N_NS ((int)(sizeof ns / sizeof ns[0]))

static void check_attend(const elk_kernels *k)
{
    static const double spreads[] = {0.1, 3.0, 40.0};
    long underflow = 0, subnormal = 0;
    rng_state = 0x9e3779b97f4a7c15ull; /* the same inputs for every table */
    for (int a = 0; a < 4; a++) {
        const int hd = hds[a];
        int cases = 0, textbook = 1;
        long mismatches = 0;
        for (int b = 0; b < N_NQS; b++)
            for (int c = 0; c < N_NS; c++)
                for (int d = 0; d < 3; d++) {
                    const int nq = nqs[b], n = ns[c];
                    for (int i = 0; i < n * KV_DIM; i++) {
                        kc[i] = rng_normal(spreads[d]);
                        vc[i] = rng_normal(1.0);
                    }
                    for (int i = 0; i < nq * hd; i++)
                        q[i] = rng_normal(spreads[d]);
                    run_attend(&elk_kernels_ref, hd, nq, n, sc_want, out_want);
                    run_attend(k, hd, nq, n, sc_got, out_got);
                    for (int j = 0; j < nq; j++) {
                        for (int s = 0; s < n; s++) {
                            const float w = sc_want[j * SC_STRIDE + s];
                            mismatches += memcmp(&w, &sc_got[j * SC_STRIDE + s], sizeof w) != 0;
                            underflow += w == 0.0f;
                            subnormal += w != 0.0f && fabsf(w) < 1.17549435e-38f;
                        }
                        /* beyond n the scratch row is the caller's: untouched */
                        mismatches += !isnan(sc_got[j * SC_STRIDE + n]);
                    }
                    mismatches += memcmp(out_want, out_got, (size_t)nq * hd * sizeof(float)) != 0;
                    if (spreads[d] <= 3.0 && !textbook_done) /* at 40 the float scores' own rounding
                                                                 * (|score| ~ 1e3) moves weights by 1e-4 */
                        textbook &= ref_is_textbook(hd, nq, n);
                    cases++;
                }
        char what[32];
        snprintf(what, sizeof what, "attend_hd%d", hd);
        report(k->name, what, cases, mismatches, mismatches == 0);
        if (!textbook_done) {
            snprintf(what, sizeof what, "ref_textbook_hd%d", hd);
            report("ref", what, cases, !textbook, textbook);
        }
    }
    textbook_done = 1; /* ref against the formula once: every table gets the same inputs */
    printf("softmax weights: %ld underflowed to 0, %ld subnormal\n", underflow, subnormal);
}

/* ---------------------------------------------------------------------------------------------
 * SwiGLU */

#define GRID 400003
static float g_in[GRID + 64], u_in[GRID + 64], g_want[GRID + 64], g_got[GRID + 64];

/* g over [-90, 90] on a fine grid (exp(-g) on both sides of the polynomial's range and through its
 * exact fallbacks), specials, floats whose exp lies within 64 double ulp of a float rounding midpoint,
 * and neighbours of the first grid points; u = 1 (g's silu itself) and then random u. */
static void check_swiglu(const elk_kernels *k)
{
    static const float special[] = {
        INFINITY, -INFINITY, 0.0f, -0.0f, 1e30f, -1e30f, 1e-30f, -1e-30f, 87.0f, -87.0f, 88.0f, -88.0f,
        88.72284f, -88.72284f, 89.0f, -89.0f, 103.9f, 104.0f, 104.1f, 0.6931472f, 1.17549435e-38f,
        -7.5697612373915035e-06f, -0.00010996452328981832f, 2.8023555278778076f,
        /* exp(-g) within 1-3 double ulp of a float midpoint (all of [-87, 88] searched with numpy) */
        0.007352583575993776f, 14.567090034484863f, -1.5199068911897484e-05f,
        /* the NEON exp's fast-path edges: x = -g clamped at -104 and 89, normal results from -87 */
        86.99999f, 87.00001f, 103.99999f, 104.00001f, -88.99999f, -89.00001f, 1e38f, -1e38f,
    };
    const int ns = (int)(sizeof special / sizeof special[0]);
    int n = 0;
    for (int i = 0; i < GRID; i++)
        g_in[n++] = (float)(-90.0 + 180.0 * i / (GRID - 1));
    for (int i = 0; i < ns; i++)
        g_in[n++] = special[i];
    g_in[n++] = nanf("");
    g_in[n++] = -nanf("");
    for (int i = 0; i < 17; i++) /* an odd count: the scalar tail runs too */
        g_in[n++] = nextafterf(g_in[i], INFINITY);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++)
            u_in[i] = pass ? rng_normal(1.0) : 1.0f;
        memcpy(g_want, g_in, (size_t)n * sizeof(float));
        memcpy(g_got, g_in, (size_t)n * sizeof(float));
        elk_kernels_ref.swiglu(g_want, u_in, n);
        k->swiglu(g_got, u_in, n);
        long mismatches = 0;
        for (int i = 0; i < n; i++)
            mismatches += memcmp(&g_want[i], &g_got[i], sizeof(float)) != 0;
        report(k->name, pass ? "swiglu_random_u" : "swiglu_u1", n, mismatches, mismatches == 0);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Timing (--bench): microseconds per call, best of 5 runs of `reps` calls. */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void bench(const elk_kernels *k)
{
    enum { HD = 64, NQ = 8, N = 1000, FF = 5632 };
    static float bk[N * HD], bv[N * HD], bq[NQ * HD], bs[NQ * N], bo[NQ * HD], bg[FF], bu[FF];
    for (int i = 0; i < N * HD; i++) {
        bk[i] = rng_normal(1.0);
        bv[i] = rng_normal(1.0);
    }
    for (int i = 0; i < NQ * HD; i++)
        bq[i] = rng_normal(1.0);
    void (*att)(int, int, int, const float *, const float *, const float *, size_t, float, float *, size_t,
                float *) = k->attend ? k->attend : elk_kernels_ref.attend;
    void (*glu)(float *, const float *, int) = k->swiglu ? k->swiglu : elk_kernels_ref.swiglu;
    double best_a = 1e30, best_g = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now_us();
        for (int i = 0; i < 4; i++)
            att(HD, NQ, N, bq, bk, bv, HD, 0.125f, bs, N, bo);
        double t1 = now_us();
        for (int i = 0; i < 4; i++) {
            for (int j = 0; j < FF; j++) {
                bg[j] = rng_normal(3.0);
                bu[j] = 1.0f;
            }
            glu(bg, bu, FF);
        }
        double t2 = now_us();
        best_a = fmin(best_a, (t1 - t0) / 4);
        best_g = fmin(best_g, (t2 - t1) / 4);
    }
    printf("bench %-13s attend hd=%d nq=%d n=%d: %.0f us/call   swiglu n=%d: %.0f us/call (incl. input fill)%s\n",
           k->name, HD, NQ, N, best_a, FF, best_g, k->attend ? "" : "   [attend slot NULL: ref's]");
}

/* --count TABLE attend|swiglu [POSITIONS]: one call on cheap (libm-free) inputs, for counting executed
 * instructions under qemu (-d exec,nochain -singlestep); TABLE "none" runs only the input setup, the
 * baseline to subtract (with the same POSITIONS). TinyLlama's shapes: head 64, a group of 8 heads over
 * POSITIONS (default 256, at most COUNT_MAX_N) positions; ffn 5632. */
#define COUNT_MAX_N 1024
static int count_one(const char *table, const char *what, int n)
{
    enum { HD = 64, NQ = 8, FF = 5632 };
    const int N = n;
    static float ck[COUNT_MAX_N * HD], cv[COUNT_MAX_N * HD], cq[NQ * HD], cs[NQ * COUNT_MAX_N], co[NQ * HD],
        cg[FF], cu[FF];
    uint32_t x = 12345;
    for (int i = 0; i < N * HD; i++) { /* uniform in [-2, 2): scores of spread ~1 */
        x = x * 1664525u + 1013904223u;
        ck[i] = (float)(x >> 8) / 4194304.0f - 2.0f;
        cv[i] = -ck[i];
    }
    for (int i = 0; i < NQ * HD; i++)
        cq[i] = ck[i * 7 % (N * HD)];
    for (int i = 0; i < FF; i++) {
        cg[i] = 3.0f * ck[i];
        cu[i] = cv[i];
    }
    if (strcmp(table, "none") == 0)
        return 0;
    const elk_kernels *k = NULL;
    for (int i = 0; elk_kernel_tables[i]; i++)
        if (strcmp(elk_kernel_tables[i]->name, table) == 0)
            k = elk_kernel_tables[i];
    if (!k)
        return 2;
    if (strcmp(what, "attend") == 0)
        (k->attend ? k->attend : elk_kernels_ref.attend)(HD, NQ, N, cq, ck, cv, HD, 0.125f, cs, N, co);
    else
        (k->swiglu ? k->swiglu : elk_kernels_ref.swiglu)(cg, cu, FF);
    return 0;
}

int main(int argc, char **argv)
{
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "--count") == 0) {
        char *end = NULL;
        const long n = argc == 5 ? strtol(argv[4], &end, 10) : 256;
        if (argc == 5 && (*argv[4] == '\0' || *end != '\0' || n < 1 || n > COUNT_MAX_N)) {
            fprintf(stderr, "%s: --count: POSITIONS must be 1..%d, not '%s'\n", argv[0], COUNT_MAX_N, argv[4]);
            return 2;
        }
        return count_one(argv[2], argv[3], (int)n);
    }
    const int do_bench = argc == 2 && strcmp(argv[1], "--bench") == 0;
    if (argc > 1 && !do_bench) {
        fprintf(stderr, "usage: %s [--bench | --count TABLE|none attend|swiglu [POSITIONS]]\n", argv[0]);
        return 2;
    }
    if (!do_bench && guard_init() != 0) {
        fprintf(stderr, "%s: cannot map the guarded KV cache copies\n", argv[0]);
        return 2;
    }
    const uint32_t features = elk_cpu_features();
    for (int i = 0; elk_kernel_tables[i]; i++) {
        const elk_kernels *k = elk_kernel_tables[i];
        if ((k->requires & features) != k->requires) {
            printf("skip  %-13s (this CPU lacks features 0x%08x)\n", k->name, (unsigned)(k->requires & ~features));
            continue;
        }
        if (do_bench) {
            bench(k);
            continue;
        }
        printf("slots %-13s attend=%s swiglu=%s\n", k->name, k->attend == NULL ? "ref" : "own",
               k->swiglu == NULL ? "ref" : "own");
        if (k == &elk_kernels_ref)
            continue;
        /* tables sharing one function (the three AArch64 NEON tables) check it once */
        const elk_kernels *same_a = NULL, *same_g = NULL;
        for (int j = 0; j < i; j++) {
            if (k->attend && elk_kernel_tables[j]->attend == k->attend && !same_a)
                same_a = elk_kernel_tables[j];
            if (k->swiglu && elk_kernel_tables[j]->swiglu == k->swiglu && !same_g)
                same_g = elk_kernel_tables[j];
        }
        if (same_a)
            printf("same  %-13s attend as %s\n", k->name, same_a->name);
        else if (k->attend)
            check_attend(k);
        if (same_g)
            printf("same  %-13s swiglu as %s\n", k->name, same_g->name);
        else if (k->swiglu)
            check_swiglu(k);
    }
    printf("attn-test: %d checks, %d failures\n", n_checks, n_failures);
    return n_failures ? 1 : 0;
}
