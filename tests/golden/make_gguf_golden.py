"""Convert the golden HF folders (tests/golden/hf, made by make_hf_golden.py) to GGUF with llama.cpp's own
converter, convert_hf_to_gguf.py, an implementation independent of elk. Not run by the tests.

    pip download --no-binary :all: --no-deps llama-cpp-python -d /tmp/lcpp   # the sdist vendors llama.cpp
    tar xzf /tmp/lcpp/llama_cpp_python-*.tar.gz -C /tmp/lcpp
    python tests/golden/make_gguf_golden.py /tmp/lcpp/llama_cpp_python-*/vendor/llama.cpp

llama.cpp's code stays outside the repository; only the GGUF files it writes are kept (gguf/), with
gguf/made_by.json saying which converter made them. Needs torch + transformers (the converter imports them).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
HF = HERE / "hf"
OUT = HERE / "gguf"
# (HF case, --outtype): the float type of each case's own storage and q8_0 (ggml's reference quantizer).
# A Llama 3.1-style RoPE-scaled variant (llama.cpp stores the scaling as the rope_freqs.weight tensor, with
# no scaling key), which elk must refuse: made from gqa_untied_f32 with this config change.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
JOBS = [("gqa_untied_f32", "f32"), ("gqa_untied_f32", "q8_0"),
        ("mha_tied_bf16_sharded", "bf16"), ("mha_tied_bf16_sharded", "q8_0"),
        ("headdim_f16_sharded", "f16"), ("headdim_f16_sharded", "q8_0")]


def main(argv: list) -> int:
    if len(argv) != 1 or not (pathlib.Path(argv[0]) / "convert_hf_to_gguf.py").is_file():
        print(__doc__)
        return 2
    llama_cpp = pathlib.Path(argv[0]).resolve()
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    OUT.mkdir(exist_ok=True)
    for case, outtype in JOBS:
        dst = OUT / f"{case}.{outtype}.gguf"
        cmd = [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(HF / case), "--outfile", str(dst),
               "--outtype", outtype]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        print(f"{dst.name}: {dst.stat().st_size} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "llama3_rope"
        shutil.copytree(HF / "gqa_untied_f32", src)
        cfg = json.loads((src / "config.json").read_text())
        cfg["rope_parameters"] = LLAMA3_ROPE
        (src / "config.json").write_text(json.dumps(cfg, indent=2))
        dst = OUT / "llama3_rope.q8_0.gguf"
        cmd = [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(src), "--outfile", str(dst),
               "--outtype", "q8_0"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        print(f"{dst.name}: {dst.stat().st_size} bytes")
    version = subprocess.run(["git", "describe", "--always"], cwd=llama_cpp, capture_output=True, text=True)
    made_by = {"converter": "llama.cpp convert_hf_to_gguf.py",
               "source": llama_cpp.parent.parent.name if llama_cpp.parent.name == "vendor" else str(llama_cpp),
               "git": version.stdout.strip() or None,
               "jobs": [{"hf": c, "outtype": t, "file": f"{c}.{t}.gguf"} for c, t in JOBS],
               "refused": {"file": "llama3_rope.q8_0.gguf", "hf": "gqa_untied_f32", "rope_parameters": LLAMA3_ROPE}}
    (OUT / "made_by.json").write_text(json.dumps(made_by, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
