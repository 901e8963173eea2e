"""Print how far elk's C-runtime logits are from the independent golden logits (transformers, llama.cpp),
as max |elk - golden| / max |golden logit| and the share of positions with the same argmax. Needs only
elk and the golden files (no torch/transformers); the tests assert bounds on the same numbers.

    python tests/golden/report_figures.py
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
sys.path.insert(0, str(ROOT / "host"))


def logits(src, tmp, ids, *pack_args):
    import elk

    image = pathlib.Path(tmp) / "x.elk"
    subprocess.run([sys.executable, "-m", "elk", "pack", str(src), "-o", str(image), *pack_args], check=True,
                   capture_output=True, cwd=ROOT)
    with elk.load(image) as m:
        return m.logits(ids)


def line(what, got, want):
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    same = np.mean(got.argmax(1) == want.argmax(1))
    print(f"{what:<66} {err:9.2e}   argmax same {same:5.1%}")


def main() -> int:
    meta = json.loads((HERE / "hf" / "cases.json").read_text())
    ids = meta["ids"]
    lcpp = np.load(HERE / "gguf" / "llama_cpp_logits.npz")
    stories = np.load(HERE / "gguf" / "stories260K_llama_cpp.npz")
    print(f"{'elk image':<66} {'rel. err':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in sorted(meta["cases"]):
            ref = np.load(HERE / "hf" / f"{case}.logits.npy")
            line(f"hf/{case} --quant f32 vs transformers", logits(HERE / "hf" / case, tmp, ids, "--quant", "f32"), ref)
            qpath = HERE / "hf" / f"{case}.quantized_logits.npz"
            for q in ("q8_0", "q4_0"):
                got = logits(HERE / "hf" / case, tmp, ids, "--quant", q)
                line(f"hf/{case} --quant {q} vs transformers", got, ref)
                if qpath.is_file():
                    line(f"  ... vs transformers with ggml-{q} weights", got, np.load(qpath)[q].astype(np.float32))
        for job in json.loads((HERE / "gguf" / "made_by.json").read_text())["jobs"]:
            name = f"{job['hf']}.{job['outtype']}.gguf"
            quant = "q8_0" if job["outtype"] == "q8_0" else "f32"
            got = logits(HERE / "gguf" / name, tmp, ids, "--quant", quant)
            line(f"gguf/{name} --quant {quant} vs transformers", got, np.load(HERE / "hf" / f"{job['hf']}.logits.npy"))
            if name in lcpp.files:
                line(f"  ... vs llama.cpp", got, lcpp[name])
        got = logits(HERE / "gguf" / "gqa_untied_f32.Q4_0.gguf", tmp, ids, "--recipe", "output=q8_0,*=q4_0")
        line("gguf/gqa_untied_f32.Q4_0.gguf (llama-quantize) vs llama.cpp", got, lcpp["gqa_untied_f32.Q4_0.gguf"])
        sids = stories["ids"].tolist()
        for q in ("f32", "q8_0", "q4_0"):
            got = logits(FIXTURES / "stories260K.gguf", tmp, sids, "--quant", q)
            line(f"stories260K.gguf --quant {q} vs llama.cpp", got, stories[q].astype(np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main())
