/* The decode GEMV alone over a real image's matrix sequence (wq wk wv wo w1 w3 w2 per layer, then the
 * output matrix), from the file mapping with MADV_HUGEPAGE as libelk maps it, one thread: GB/s per pass.
 * The gap between it and `elk bench`'s decode GB/s is the work between matrices (attention, norms, ...).
 * Build and run (docs/performance.md):
 *   K=firmware; gcc -O3 -march=native -ffp-contract=off -I$K/include -I$K/src -I$K/src/kernels \
 *       tools/bench/gemv_sequence.c $K/src/image/image.c $K/src/util/{crc32,sha256,fmt,strerror}.c \
 *       $K/src/kernels/{avx2,avx2_gemv,avx2_attn,ref,tables}.c -lm -o /tmp/gemv_sequence
 *   /tmp/gemv_sequence tl-q4_0.elk          # pass 0 faults the image in; the later passes are the figure
 * Not a test: numbers only. Q8_0/Q4_0 images on an AVX-512 or AVX2 build. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <immintrin.h>
#include "elk/elk.h"
#include "kernels.h"
#include "avx2_common.h"
static double now_s(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: gemv_sequence image.elk\n");
    return 2;
  }
  int fd = open(argv[1], O_RDONLY); struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[1]); return 2; }
  void *m = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0); madvise(m, st.st_size, MADV_HUGEPAGE);
  elk_image img; if (elk_image_open(&img, m, st.st_size)) { printf("open failed\n"); return 1; }
  int roles[] = { ELK_ROLE_WQ, ELK_ROLE_WK, ELK_ROLE_WV, ELK_ROLE_WO, ELK_ROLE_W1, ELK_ROLE_W3, ELK_ROLE_W2 };
  enum { MAX_LAYERS = 64 };
  static elk_tensor t[MAX_LAYERS * 7 + 1]; int n = 0;
  for (int l = 0; l < (int)img.config.n_layers && l < MAX_LAYERS; l++)
    for (int k = 0; k < 7; k++)
      if (elk_image_find(&img, roles[k], l, &t[n]) == ELK_OK && (t[n].type == ELK_TYPE_Q4_0 || t[n].type == ELK_TYPE_Q8_0)) n++;
  if (elk_image_find(&img, ELK_ROLE_OUTPUT, 0, &t[n]) == ELK_OK && (t[n].type == ELK_TYPE_Q4_0 || t[n].type == ELK_TYPE_Q8_0)) n++;
  uint32_t maxc = 0, maxr = 0;
  for (int i = 0; i < n; i++) { maxc = t[i].cols > maxc ? t[i].cols : maxc; maxr = t[i].rows > maxr ? t[i].rows : maxr; }
  float *xf = malloc(4 * (size_t)maxc), *y = malloc(4 * (size_t)maxr);
  elk_block_q8_0 *xq = malloc(sizeof(elk_block_q8_0) * (maxc / 32 + 1));
  for (uint32_t i = 0; i < maxc; i++) xf[i] = rand() / (float)RAND_MAX - 0.5f;
  elk_kernels_ref.quantize_q8_0(xf, xq, (int)(maxc / 32 * 32));
  size_t bytes = 0; for (int i = 0; i < n; i++) bytes += t[i].size;
  for (int pass = 0; pass < 8; pass++) {
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
      elk_gemv_avx2((int)t[i].type, (int)t[i].cols / 32, t[i].data, elk_row_bytes(t[i].type, t[i].cols), 0, (int)t[i].rows, xq, y);
    }
    double dt = now_s() - t0;
    printf("pass %d: %.1f GB/s (%.2f ms, %d matrices, %.0f MB)\n", pass, bytes / dt / 1e9, dt * 1e3, n, bytes / 1e6);
  }
  return 0;
}
