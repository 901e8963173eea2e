"""Quantization matches ggml's reference numerics byte for byte (checked against the gguf package's
own quantizer), dequantization inverts the block layout, and recipes pick per-tensor types."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT

from conftest import fixture_path
from elk import quant
from elk.convert import llama2c

GGUF_TYPES = {"Q8_0": GT.Q8_0, "Q4_0": GT.Q4_0, "F16": GT.F16}


def hard_cases():
    rng = np.random.default_rng(1234)
    x = (rng.standard_normal((48, 128)) * rng.uniform(1e-4, 30, (48, 1))).astype(np.float32)
    x[0, :32] = 0  # all-zero block: d = 0
    x[1, :32] = 1.0
    x[1, 7] = -4.0  # negative largest magnitude
    x[2, :32] = np.arange(32, dtype=np.float32) - 16  # exact halves after scaling
    x[3, :32] = np.float32(127) * np.linspace(-1, 1, 32, dtype=np.float32)
    x[4, :32] = 1e-8  # subnormal fp16 scale
    x[5, :32] = 7e5 * np.sign(rng.standard_normal(32))  # q4_0 scale 87500 overflows fp16 to inf
    x[6, :32] = -np.arange(32, dtype=np.float32) / 3
    return x


@pytest.fixture(scope="module")
def real_tensors():
    m = llama2c.read(fixture_path("stories260K.bin"))
    return [m.get("TOK_EMBD"), m.get("WQ", 0), m.get("W1", 3), m.get("WO", 4)]


@pytest.mark.parametrize("t", ["Q8_0", "Q4_0", "F16"])
def test_quantize_is_byte_identical_to_gguf_on_random_and_edge_cases(t):
    x = hard_cases()
    ours = quant.quantize(x, t)
    with np.errstate(over="ignore"):
        theirs = gguf.quants.quantize(x, GGUF_TYPES[t])
    assert ours.tobytes() == np.ascontiguousarray(theirs).tobytes()


@pytest.mark.parametrize("t", ["Q8_0", "Q4_0"])
def test_quantize_is_byte_identical_to_gguf_on_real_weights(t, real_tensors):
    for w in real_tensors:
        assert quant.quantize(w, t).tobytes() == gguf.quants.quantize(w, GGUF_TYPES[t]).tobytes()


@pytest.mark.parametrize("t", ["Q8_0", "Q4_0", "F16"])
def test_dequantize_matches_gguf(t, real_tensors):
    w = real_tensors[0]
    raw = quant.quantize(w, t)
    ours = quant.dequantize(raw, t, w.shape)
    theirs = gguf.quants.dequantize(gguf.quants.quantize(w, GGUF_TYPES[t]), GGUF_TYPES[t])
    assert ours.dtype == np.float32 and np.array_equal(ours, theirs.reshape(w.shape))


def test_q4_0_block_layout_low_nibbles_first_half():
    x = np.zeros((1, 32), dtype=np.float32)
    x[0, 0] = -8.0  # largest magnitude -> d = -8 / -8 = 1
    x[0, 16] = 7.0
    x[0, 1] = 3.0
    raw = quant.quantize(x, "Q4_0").reshape(-1)
    assert raw[:2].view(np.float16)[0] == 1.0
    assert raw[2] == (0 | (15 << 4))  # x[0] -> 0 (=-8+8), x[16] -> 15 (=7+8)
    assert raw[3] == (11 | (8 << 4))  # x[1] -> 11, x[17] -> 8
    np.testing.assert_array_equal(quant.dequantize(raw, "Q4_0", (1, 32)), x)


def test_row_bytes_and_rejects_bad_sizes():
    assert quant.row_bytes("q8_0", 64) == 68 and quant.row_bytes("Q4_0", 64) == 36
    assert quant.row_bytes("F16", 172) == 344 and quant.row_bytes("q4_0", 172) == 0
    with pytest.raises(quant.QuantError, match="needs 68 bytes, got 67"):
        quant.dequantize(np.zeros(67, np.uint8), "Q8_0", (1, 64))
    with pytest.raises(quant.QuantError, match="unknown tensor type 'q5_k'"):
        quant.type_name("q5_k")


def test_recipe_inline_globs_first_match_wins_and_norms_stay_f32():
    r = quant.parse_recipe("q4_0", "token_embd=q8_0,output=q8_0,blk.*.attn_v=f16")
    assert r.choose("token_embd.weight", "TOK_EMBD", 64) == ("Q8_0", "")
    assert r.choose("output.weight", "OUTPUT", 64) == ("Q8_0", "")
    assert r.choose("blk.3.attn_v.weight", "WV", 64) == ("F16", "")
    assert r.choose("blk.3.attn_q.weight", "WQ", 64) == ("Q4_0", "")
    assert r.choose("blk.3.ffn_norm.weight", "FFN_NORM", 64) == ("F32", "")
    t, note = r.choose("blk.0.ffn_down.weight", "W2", 172)
    assert t == "F16" and "172" in note
    assert quant.parse_recipe("f32", "*=q8_0").default == "Q8_0"


def test_recipe_from_file_with_comments(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("# keep embeddings precise\ntoken_embd = q8_0\n*=q4_0  # the rest\n")
    r = quant.parse_recipe("f32", str(f))
    assert r.default == "Q4_0" and r.rules == [("token_embd", "Q8_0")]
    assert r.text() == "token_embd=q8_0,*=q4_0"


@pytest.mark.parametrize("bad, msg", [("wq", "cannot read"), ("x=q9", "unknown tensor type"),
                                      ("x=bf16", "cannot pack to BF16")])
def test_recipe_errors_are_one_line(bad, msg):
    with pytest.raises(quant.QuantError, match=msg):
        quant.parse_recipe("f32", bad)


def test_error_stats_measure_quantization_error(real_tensors):
    w = real_tensors[1]
    rmse8, max8 = quant.error_stats(w, quant.quantize(w, "Q8_0"), "Q8_0")
    rmse4, max4 = quant.error_stats(w, quant.quantize(w, "Q4_0"), "Q4_0")
    assert 0 < rmse8 < rmse4 and max8 < max4
    # q8_0 error is at most half a step per block: amax / 127 / 2 (+ fp16 rounding of d)
    assert max8 <= np.abs(w).max() / 127 / 2 * 1.01


def test_cli_pack_prints_per_tensor_report_with_recipe_and_fallback(tmp_path):
    import subprocess
    import sys

    from elk import image as im

    out = tmp_path / "r.elk"
    r = subprocess.run([sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "-o", str(out),
                        "--tokenizer", str(fixture_path("tok512.bin")), "--quant", "q4_0",
                        "--recipe", "token_embd=q8_0,blk.0.*=f16", "--security-counter", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.startswith(("token_embd", "blk."))}
    assert lines["token_embd.weight"][1:4] == ["Q8_0", "512x64", "34816"]
    assert lines["blk.0.attn_q.weight"][1] == "F16" and lines["blk.1.attn_q.weight"][1] == "Q4_0"
    assert float(lines["blk.1.attn_q.weight"][4]) > 0  # RMSE reported
    assert lines["blk.1.attn_norm.weight"][1] == "F32"
    assert "not a multiple of 32: q4_0 -> f16" in r.stdout  # ffn_down (172 cols) fallback is stated
    img = im.read_image(out)
    assert img.metadata["quant.recipe"] == "token_embd=q8_0,blk.0.*=f16,*=q4_0"
    assert img.header["security_counter"] == 5
    assert img.tensor("W2", 3).type == "F16"


def test_cli_pack_warns_about_recipe_rules_that_match_no_tensor(tmp_path):
    """A typo in a glob would otherwise pack silently at the default type."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "--quiet",
                        "-o", str(tmp_path / "w.elk"), "--tokenizer", str(fixture_path("tok512.bin")),
                        "--recipe", "blk.*.atn_q=q8_0,blk.*.attn_k=q8_0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("elk: warning:")]
    assert len(warn) == 1 and "'blk.*.atn_q=q8_0' matched no tensor" in warn[0], r.stderr
    rec = quant.parse_recipe("q4_0", "token_embd=q8_0,nothing=f16")
    rec.choose("token_embd.weight", "TOKEN_EMBD", 64)
    assert rec.unused_rules() == [("nothing", "F16")]


def test_cli_pack_missing_local_file_is_not_a_hub_lookup(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "elk", "pack", "models/nothing.bin", "-o", str(tmp_path / "x.elk")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr and "hub" not in r.stderr
