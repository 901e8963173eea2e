"""Weights are used in place from the memory-mapped image, not copied: after a forward pass over a
26 MB stories15M-shaped q8_0 image, the weights touched show up as file-backed resident pages
(RssFile) and the process's anonymous memory (RssAnon) grows by far less than the weights."""

import json
import os
import subprocess
import sys

from conftest import ROOT, fixture_path
from elk import bench
from elk.models import synth

CHILD = r"""
import json, sys
import elk, elk.runtime

def rss():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out

elk.runtime.library()
before = rss()
with elk.load(sys.argv[1], threads=2) as m:
    m.logits(m.tokenize("Once upon a time there was"))
    after = rss()
print(json.dumps({k: after[k] - before[k] for k in after}))
"""


def test_a_forward_pass_reads_the_weights_from_the_mapping_without_copying_them(host_build, tmp_path):
    image = synth.synthesize("stories15m", tmp_path / "s15.elk", vocab_path=fixture_path("tokenizer.model"),
                             quant="q8_0")
    weights = bench.weight_bytes_per_token(image)  # every matrix, norm and one embedding row: 16 MB
    assert weights > 15_000_000
    proc = subprocess.run([sys.executable, "-c", CHILD, str(image)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "host"), "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    grew = json.loads(proc.stdout)
    assert grew["RssFile"] >= 0.9 * weights  # the pass really touched the weights, in the file mapping
    assert grew["RssAnon"] < weights / 4  # no copy: KV cache and activations for 7 tokens only
