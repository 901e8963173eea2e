#!/bin/bash
# elk next to llama.cpp after a 1000-token prompt (docs/performance.md, "Long context"): decode of 16
# tokens at depth 1000 and the prefill of the 1000-token prompt, q4_0, 1 and 2 threads. Needs a built
# llama-bench and the model files of the setup section; nothing here downloads.
#   LLAMA_BENCH=/tmp/llamacpp/build/bin/llama-bench MODELS=/tmp/elkbench tools/bench/long_context.sh
set -u
B=${LLAMA_BENCH:-/tmp/llamacpp/build/bin/llama-bench}
M=${MODELS:-/tmp/elkbench}
for f in "$M/tl-q4_0.gguf" "$M/tl-q4_0.elk"; do
  [ -f "$f" ] || { echo "long_context: $f is missing (see docs/performance.md, setup)" >&2; exit 2; }
done
for t in ${THREADS:-1 2}; do
  echo "== t=$t  load: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$B" -m "$M/tl-q4_0.gguf" -t "$t" -p 0 -n 16 -d 1000 -r 2 -o csv 2>/dev/null | python3 -c "
import csv, sys
for r in csv.DictReader(sys.stdin): print('llama.cpp tg16 @ d1000', round(float(r['avg_ts']), 2), '+-', round(float(r['stddev_ts']), 2))"
  "$B" -m "$M/tl-q4_0.gguf" -t "$t" -p 1000 -n 0 -r 1 -o csv 2>/dev/null | python3 -c "
import csv, sys
for r in csv.DictReader(sys.stdin): print('llama.cpp pp1000', round(float(r['avg_ts']), 2))"
  elk bench "$M/tl-q4_0.elk" -t "$t" --prompt 1000 --gen 16 --reps 2 --no-probe --json | python3 -c "
import json, sys
r = json.load(sys.stdin)
print('elk decode @ 1000', round(r['decode_tok_s'], 2), ' prefill 1000', round(r['prefill_tok_s'], 2))"
done
