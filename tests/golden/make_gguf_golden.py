"""GGUF golden data from llama.cpp (an implementation independent of elk). Not run by the tests.

1. The golden HF folders (tests/golden/hf, from make_hf_golden.py) converted by llama.cpp's own
   convert_hf_to_gguf.py, plus a Llama 3.1 RoPE-scaled variant (rope_freqs.weight).
2. With --build (a cmake build of the same llama.cpp) and --logits-tool (llama_logits.cpp built against
   it): a Q4_0 file made by llama-quantize, and llama.cpp's own logits for the quantized files
   (gguf/llama_cpp_logits.npz).

    pip download --no-binary :all: --no-deps llama-cpp-python -d /tmp/lcpp   # the sdist vendors llama.cpp
    tar xzf /tmp/lcpp/llama_cpp_python-*.tar.gz -C /tmp/lcpp
    LLAMA=$(echo /tmp/lcpp/llama_cpp_python-*/vendor/llama.cpp)
    cmake -S $LLAMA -B /tmp/lcpp/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_OPENMP=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
    cmake --build /tmp/lcpp/build -j2 --target llama-quantize llama
    g++ -O2 -std=c++17 -I$LLAMA/include -I$LLAMA/ggml/include tests/golden/llama_logits.cpp \
        -L/tmp/lcpp/build/bin -lllama -lggml -lggml-base -lggml-cpu -Wl,-rpath,/tmp/lcpp/build/bin \
        -o /tmp/lcpp/llama_logits
    python tests/golden/make_gguf_golden.py $LLAMA --build /tmp/lcpp/build --logits-tool /tmp/lcpp/llama_logits

llama.cpp's code stays outside the repository; only the files it writes are kept (gguf/), with
gguf/made_by.json saying what made them. Needs torch + transformers (the converter imports them).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
HF = HERE / "hf"
OUT = HERE / "gguf"
# (HF case, --outtype): each case's own float type and q8_0 (ggml's reference quantizer).
JOBS = [("gqa_untied_f32", "f32"), ("gqa_untied_f32", "q8_0"),
        ("mha_tied_bf16_sharded", "bf16"), ("mha_tied_bf16_sharded", "q8_0"),
        ("headdim_f16_sharded", "f16"), ("headdim_f16_sharded", "q8_0")]
# Llama 3.1 RoPE scaling: llama.cpp stores it as the rope_freqs.weight tensor, with no scaling key.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
QUANTIZE = ("gqa_untied_f32.f32.gguf", "Q4_0", "gqa_untied_f32.Q4_0.gguf")  # llama-quantize src, type, dst
LOGITS = ["gqa_untied_f32.q8_0.gguf", "headdim_f16_sharded.q8_0.gguf", "mha_tied_bf16_sharded.q8_0.gguf",
          "gqa_untied_f32.Q4_0.gguf", "llama3_rope.q8_0.gguf"]


# Texts llama.cpp tokenizes with the fixture Llama 2 vocabulary (parse_special: "</s>" is the EOS id),
# among them TinyLlama's Zephyr prompt as its chat template renders it.
VOCAB_GGUF = HERE.parents[2] / "shared" / "fixtures" / "ggml-vocab-llama-spm.gguf"
TOKEN_TEXTS = ["<|user|>\nTell me a story</s>\n<|assistant|>\n",
               "<|system|>\nYou are a friendly chatbot</s>\n<|user|>\nHi!</s>\n<|assistant|>\n",
               "Once upon a time, h\u00e9llo \u4e2d! 42", "  two  spaces\nand a newline"]


# stories260K.gguf (a real trained model, fixture) through llama.cpp: the f32 file and llama-quantize --pure
# Q8_0 / Q4_0 copies (not kept: elk's quantizer makes the same bytes), on llama.cpp's tokens of STORY.
STORIES = HERE.parents[2] / "shared" / "fixtures" / "stories260K.gguf"
STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."


def stories_logits(build, tool) -> None:
    proc = subprocess.run([str(tool), str(STORIES), "--tokenize", STORY], capture_output=True, text=True, check=True)
    ids = [int(t) for t in proc.stdout.split()]
    out = {"ids": np.array(ids, np.int32)}
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in ("F32", "Q8_0", "Q4_0"):
            src = STORIES
            if qtype != "F32":
                src = pathlib.Path(tmp) / f"stories260K.{qtype}.gguf"
                run([build / "bin" / "llama-quantize", "--pure", STORIES, src, qtype])
            raw = pathlib.Path(tmp) / "logits.f32"
            run([tool, src, raw, *ids])
            logits = np.fromfile(raw, dtype=np.float32).reshape(len(ids), -1)
            out[qtype.lower()] = logits if qtype == "F32" else logits.astype(np.float16)
    np.savez_compressed(OUT / "stories260K_llama_cpp.npz", **out)


def run(cmd, env=None) -> None:
    proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd[:3]))} failed:\n{proc.stderr[-3000:]}")


def convert(llama_cpp, env, src, dst, outtype) -> None:
    run([sys.executable, llama_cpp / "convert_hf_to_gguf.py", src, "--outfile", dst, "--outtype", outtype], env)
    print(f"{dst.name}: {dst.stat().st_size} bytes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("llama_cpp", type=pathlib.Path)
    ap.add_argument("--build", type=pathlib.Path, help="cmake build dir with bin/llama-quantize")
    ap.add_argument("--logits-tool", type=pathlib.Path, help="llama_logits built from llama_logits.cpp")
    args = ap.parse_args()
    llama_cpp = args.llama_cpp.resolve()
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    OUT.mkdir(exist_ok=True)
    for case, outtype in JOBS:
        convert(llama_cpp, env, HF / case, OUT / f"{case}.{outtype}.gguf", outtype)
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "llama3_rope"
        shutil.copytree(HF / "gqa_untied_f32", src)
        cfg = json.loads((src / "config.json").read_text())
        cfg["rope_parameters"] = LLAMA3_ROPE
        (src / "config.json").write_text(json.dumps(cfg, indent=2))
        convert(llama_cpp, env, src, OUT / "llama3_rope.q8_0.gguf", "q8_0")
    version = subprocess.run(["git", "describe", "--always"], cwd=llama_cpp, capture_output=True, text=True)
    made_by = {"converter": "llama.cpp convert_hf_to_gguf.py",
               "source": llama_cpp.parent.parent.name if llama_cpp.parent.name == "vendor" else str(llama_cpp),
               "git": version.stdout.strip() or None,
               "jobs": [{"hf": c, "outtype": t, "file": f"{c}.{t}.gguf"} for c, t in JOBS],
               "llama3_rope": {"file": "llama3_rope.q8_0.gguf", "hf": "gqa_untied_f32", "rope_parameters": LLAMA3_ROPE}}
    if args.build and args.logits_tool:
        src, qtype, dst = QUANTIZE
        run([args.build / "bin" / "llama-quantize", OUT / src, OUT / dst, qtype])
        print(f"{dst}: {(OUT / dst).stat().st_size} bytes")
        ids = json.loads((HF / "cases.json").read_text())["ids"]
        logits = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in LOGITS:
                raw = pathlib.Path(tmp) / "logits.f32"
                run([args.logits_tool, OUT / name, raw, *ids])
                logits[name] = np.fromfile(raw, dtype=np.float32).reshape(len(ids), -1)
        np.savez_compressed(OUT / "llama_cpp_logits.npz", **logits)
        tokens = []
        for text in TOKEN_TEXTS:
            proc = subprocess.run([str(args.logits_tool), str(VOCAB_GGUF), "--tokenize", text], capture_output=True,
                                  text=True, check=True)
            tokens.append({"text": text, "ids": [int(t) for t in proc.stdout.split()]})
        (OUT / "llama_cpp_tokens.json").write_text(json.dumps({"vocab": VOCAB_GGUF.name, "add_special": True,
                                                               "parse_special": True, "texts": tokens}, indent=1))
        stories_logits(args.build, args.logits_tool)
        made_by["stories260K_llama_cpp"] = {"file": "stories260K_llama_cpp.npz", "text": STORY,
                                            "keys": "ids, f32 (float32), q8_0 and q4_0 (float16: llama-quantize "
                                                    "--pure copies of the fixture)"}
        made_by["llama_quantize"] = {"src": src, "type": qtype, "file": dst}
        made_by["llama_cpp_logits"] = {"file": "llama_cpp_logits.npz", "keys": LOGITS,
                                       "how": "llama_logits.cpp: one batch, float32 KV cache, no flash attention, "
                                              "1 thread, CPU backend"}
    (OUT / "made_by.json").write_text(json.dumps(made_by, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
