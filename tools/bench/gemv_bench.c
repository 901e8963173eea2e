/* Decode-GEMV microbenchmark for the avx2 kernel table: one token against 5632 x 2048 Q4_0 or Q8_0
 * matrices (TinyLlama's FFN shape), one thread, with random weights. Prints the largest relative
 * difference from ref's dot, the rate with the rows resident in L2 (the kernel's compute rate) and
 * the rate over ~600 MB of matrices (from DRAM). Best of many passes: a busy machine only slows it.
 * Build and run (docs/performance.md):
 *   K=firmware; gcc -O3 -march=native -ffp-contract=off -I$K/include -I$K/src -I$K/src/kernels \
 *       tools/bench/gemv_bench.c $K/src/kernels/{avx2,avx2_gemv,avx2_attn,ref,tables}.c -lm -o /tmp/gemv_bench
 *   /tmp/gemv_bench 4      # Q4_0;  /tmp/gemv_bench 8 for Q8_0
 * Not a test: numbers only (tests/test_kernels_avx2_numerics.py checks the results). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <math.h>
#include <immintrin.h>
#include "kernels.h"
extern const elk_kernels elk_kernels_avx2;
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static uint16_t f2h(float f){ return _cvtss_sh(f,0);}
int main(int argc,char**argv){
  int wt = argc>1 && argv[1][0]=='8' ? ELK_TYPE_Q8_0 : ELK_TYPE_Q4_0;
  int n=2048, rows=5632; size_t rb = elk_row_bytes(wt,n);
  size_t big = (size_t)600<<20; int nmat = big/(rb*rows); 
  uint8_t *W = aligned_alloc(64, rb*rows*(size_t)nmat+64);
  srand(1); for(size_t i=0;i<rb*rows*(size_t)nmat;i++) W[i]=rand();
  for(size_t r=0;r<(size_t)rows*nmat;r++) for(int b=0;b<n/32;b++){ uint16_t *d=(uint16_t*)(W+r*rb+b*(wt==ELK_TYPE_Q4_0?18:34)); *d=f2h(0.01f*(1+(rand()%100)/100.f)); }
  float *xf=malloc(n*4); for(int i=0;i<n;i++) xf[i]=(rand()%2000-1000)/500.f;
  elk_block_q8_0 *xq=malloc(n/32*34); elk_kernels_ref.quantize_q8_0(xf,xq,n);
  float *y=malloc(rows*4), *yr=malloc(rows*4);
  elk_kernels_avx2.gemm[wt](n,W,rb,0,rows,xq,rb,1,y,rows);
  for(int r=0;r<rows;r++) yr[r]=elk_kernels_ref.dot[wt](n,W+r*rb,xq);
  double me=0; for(int r=0;r<rows;r++){ double e=fabs(y[r]-yr[r])/(fabs(yr[r])+1e-3); if(e>me)me=e;} printf("max rel err %.2e\n",me);
  /* L2-resident: 1 matrix slice of 256 rows (~150KB) repeated */
  double best=1e9; for(int rep=0;rep<200;rep++){ double t0=now(); for(int k=0;k<20;k++) elk_kernels_avx2.gemm[wt](n,W,rb,0,256,xq,rb,1,y,rows); double dt=now()-t0; if(dt<best)best=dt;}
  printf("L2  : %.1f GB/s  (%.2f ns/block)\n", 20.0*256*rb/best/1e9, best/(20.0*256*n/32)*1e9);
  best=1e9; for(int rep=0;rep<30;rep++){ double t0=now(); for(int k=0;k<nmat;k++) elk_kernels_avx2.gemm[wt](n,W+(size_t)k*rb*rows,rb,0,rows,xq,rb,1,y,rows); double dt=now()-t0; if(dt<best)best=dt;}
  printf("DRAM: %.1f GB/s\n", (double)nmat*rows*rb/best/1e9);
}
