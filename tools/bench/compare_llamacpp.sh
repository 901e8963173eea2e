#!/bin/bash
# elk next to llama.cpp on the same weights (docs/performance.md, "elk next to llama.cpp: setup"):
# for each quantization and thread count, llama-bench then `elk bench` (with its bandwidth probe),
# back to back, the 1-minute load average printed first. Needs a built llama-bench and the four
# model files the setup section makes; nothing here downloads.
#   LLAMA_BENCH=/tmp/llamacpp/build/bin/llama-bench MODELS=/tmp/elkbench tools/bench/compare_llamacpp.sh
#   QUANTS="q4_0" THREADS="2" ... to run a subset
#   The files' page cache is dropped and read back first (both runtimes then read weights that were
#   filled in 2 MiB folios; memory pressure splits them over time: docs/performance.md, huge pages).
set -u
B=${LLAMA_BENCH:-/tmp/llamacpp/build/bin/llama-bench}
M=${MODELS:-/tmp/elkbench}
for f in "$M"/tl-*.gguf "$M"/tl-*.elk; do
  [ -f "$f" ] && dd if="$f" iflag=nocache count=0 status=none && cat "$f" >/dev/null
done
for q in ${QUANTS:-q4_0 q8_0}; do
  for t in ${THREADS:-1 2}; do
    for f in "$M/tl-$q.gguf" "$M/tl-$q.elk"; do
      [ -f "$f" ] || { echo "compare_llamacpp: $f is missing (see docs/performance.md, setup)" >&2; exit 2; }
    done
    echo "== $q t=$t  load: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$B" -m "$M/tl-$q.gguf" -t "$t" -p 64 -n 32 -r 3 -o csv 2>/dev/null | python3 -c "
import csv, sys
for r in csv.DictReader(sys.stdin):
    kind = 'pp%s' % r['n_prompt'] if int(r['n_prompt']) else 'tg%s' % r['n_gen']
    print('llama.cpp', kind, round(float(r['avg_ts']), 2), '+-', round(float(r['stddev_ts']), 2), 't/s')"
    elk bench "$M/tl-$q.elk" -t "$t" --prompt 64 --gen 32 --reps 3 --json | python3 -c "
import json, sys
r = json.load(sys.stdin)
keys = ['prefill_tok_s', 'decode_tok_s', 'decode_gb_s', 'probe_gb_s', 'bandwidth_pct_same_threads',
        'prefill_cpu_ms', 'decode_cpu_ms', 'peak_rss_mb', 'open_ms', 'load_avg']
print('elk', {k: round(r[k], 2) for k in keys}, 'decode reps', [round(x, 1) for x in r['decode_runs']],
      'probes', r['probe_runs'], 'on 2 MiB pages %', r['huge_pages_pct'] and round(r['huge_pages_pct']))"
  done
done
