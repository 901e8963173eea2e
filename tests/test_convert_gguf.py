"""GGUF llama files: stories260K.gguf (converted by llama.cpp) gives the same logits as stories260K.bin;
Q8_0/Q4_0 tensors written by the gguf package are kept bit for bit; F16/BF16 are read; damage is a
one-line FormatError."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as GT

from conftest import fixture_path
from elk import image as im
from elk.convert import gguf_reader, llama2c, load_model
from elk.errors import FormatError
from elk.reference import Reference

IDS = [1, 403, 407, 261, 378, 9, 30, 100]


@pytest.fixture(scope="module")
def bin_model():
    return llama2c.read(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))


def write_gguf(path, model, qtype, *, tied=True, context=512, drop=None, raw=None):
    """A llama GGUF in llama.cpp's layout, weights quantized by the gguf package itself."""
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-stories")
    w.add_context_length(context)
    w.add_embedding_length(c.dim)
    w.add_feed_forward_length(c.hidden_dim)
    w.add_block_count(c.n_layers)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    v = model.vocab
    w.add_tokenizer_model("llama")
    w.add_token_list([p.encode() for p in v.pieces])
    w.add_token_scores(v.scores)
    w.add_token_types(v.types)
    w.add_bos_token_id(v.bos_id)
    w.add_eos_token_id(v.eos_id)
    w.add_unk_token_id(v.unk_id)
    w.add_chat_template("{% for m in messages %}<|user|>\n{{ m['content'] }}</s>{% endfor %}")
    from elk.convert import tensor_name

    keys = list(c.tensor_keys()) + ([] if tied else [("OUTPUT", 0)])
    for role, layer in keys:
        name = tensor_name(role, layer)
        if name == drop:
            continue
        if raw and name in raw:  # (ggml type, uint8 blocks) written as given
            w.add_tensor(name, raw[name][1], raw_shape=raw[name][1].shape, raw_dtype=raw[name][0])
            continue
        src = role if role != "OUTPUT" else "TOK_EMBD"
        x = model.tensors[(src, layer)].load()
        t = GT.F32 if role.endswith("NORM") or x.shape[1] % 32 else qtype
        if role.endswith("NORM"):
            x = x.reshape(-1)
        if t == GT.F32:
            w.add_tensor(name, x)
        else:
            q = gguf.quants.quantize(x, t)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_stories260k_gguf_gives_the_same_logits_as_llama2c_bin(bin_model):
    g = load_model(fixture_path("stories260K.gguf"))
    assert g.config.tied_output  # llama.cpp stored output.weight = token_embd; the reader re-ties it
    assert g.config.seq_len == 128 and abs(g.config.norm_eps - 1e-5) < 1e-10
    assert g.vocab.pieces == bin_model.vocab.pieces
    assert np.array_equal(Reference(g).logits(IDS), Reference(bin_model).logits(IDS))


def test_gguf_q8_0_blocks_are_kept_bit_for_bit(bin_model, tmp_path):
    src = tmp_path / "q8.gguf"
    write_gguf(src, bin_model, GT.Q8_0)
    m = gguf_reader.read(src)
    assert m.chat_template == "zephyr" and m.name == "tiny-stories"
    out = tmp_path / "q8.elk"
    im.write_image(out, m, quant="q8_0")
    img = im.read_image(out)
    r = gguf.GGUFReader(str(src))
    for t in r.tensors:
        if t.tensor_type == GT.Q8_0:
            assert img.tensors[t.name].type == "Q8_0"
            assert img.tensors[t.name].data.tobytes() == np.asarray(t.data).tobytes(), t.name
    assert img.metadata["chat.template"] == "zephyr"


@pytest.mark.parametrize("qtype", [GT.Q8_0, GT.Q4_0, GT.F16])
def test_gguf_tensor_kept_bit_for_bit_is_still_checked_for_nan_and_inf(bin_model, tmp_path, qtype):
    """A NaN/inf fp16 scale (or F16 value) in copied GGUF bytes is refused like a NaN float weight."""
    w = bin_model.get("WQ", 1)
    blocks = gguf.quants.quantize(w, qtype).copy()
    if qtype == GT.F16:
        blocks.reshape(-1)[5] = np.inf  # gguf gives float16 values for F16
    else:
        flat, per = blocks.reshape(-1), (34 if qtype == GT.Q8_0 else 18)
        flat[3 * per:3 * per + 2] = np.frombuffer(np.float16(np.nan).tobytes(), np.uint8)  # block 3's scale
    src = tmp_path / "nan.gguf"
    write_gguf(src, bin_model, qtype, raw={"blk.1.attn_q.weight": (qtype, blocks)})
    m = gguf_reader.read(src)
    target = {GT.Q8_0: "q8_0", GT.Q4_0: "q4_0", GT.F16: "f16"}[qtype]
    with pytest.raises(FormatError, match=r"tensor blk\.1\.attn_q\.weight contains NaN or infinite"):
        im.write_image(tmp_path / "nan.elk", m, quant=target)


def test_gguf_q4_0_source_requantized_to_q8_0_from_its_values(bin_model, tmp_path):
    src = tmp_path / "q4.gguf"
    write_gguf(src, bin_model, GT.Q4_0, tied=False)
    m = gguf_reader.read(src)
    assert m.config.tied_output  # output.weight bytes equal token_embd's
    wq = m.get("WQ", 2)
    ref = gguf.quants.dequantize(gguf.quants.quantize(bin_model.get("WQ", 2), GT.Q4_0), GT.Q4_0)
    assert np.array_equal(wq, ref)
    im.write_image(tmp_path / "a.elk", m, quant="q4_0")
    im.write_image(tmp_path / "b.elk", bin_model, quant="q4_0")
    la, lb = Reference(tmp_path / "a.elk").logits(IDS), Reference(tmp_path / "b.elk").logits(IDS)
    assert np.array_equal(la, lb)  # re-quantizing q4_0 values to q4_0 gives the same blocks


@pytest.mark.parametrize("qtype, tol", [(GT.F16, 1e-3), (GT.BF16, 1e-2)])
def test_gguf_half_types_are_read(bin_model, tmp_path, qtype, tol):
    src = tmp_path / "h.gguf"
    write_gguf(src, bin_model, qtype)
    m = gguf_reader.read(src)
    np.testing.assert_allclose(m.get("W1", 0), bin_model.get("W1", 0), atol=tol)


def test_gguf_missing_tensor_and_damage_are_format_errors(bin_model, tmp_path):
    src = tmp_path / "m.gguf"
    write_gguf(src, bin_model, GT.Q8_0, drop="blk.3.attn_v.weight")
    with pytest.raises(FormatError, match="missing tensor blk.3.attn_v.weight"):
        gguf_reader.read(src)
    good = tmp_path / "g.gguf"
    write_gguf(good, bin_model, GT.Q8_0)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(FormatError) as e:
        load_model(cut)
    assert "\n" not in str(e.value)


def q6_k_blocks(rows, cols, seed=0):
    """Valid Q6_K bytes (ql[128], qh[64], int8 scales[16], fp16 d per 256 weights) with random codes."""
    rng = np.random.default_rng(seed)
    nb = rows * cols // 256
    blk = np.zeros((nb, 210), np.uint8)
    blk[:, :192] = rng.integers(0, 256, (nb, 192))
    blk[:, 192:208] = rng.integers(-20, 20, (nb, 16)).astype(np.int8).view(np.uint8)
    blk[:, 208:210] = np.full((nb, 1), 0.001, np.float16).view(np.uint8)
    return blk.reshape(rows, -1)


def test_gguf_other_ggml_types_are_dequantized_by_the_gguf_package(bin_model, tmp_path):
    # llama.cpp's q4_0 files carry a Q6_K output.weight (rows of 256-multiples); Q5_0 stands for the
    # other legacy types. A 256-wide model, since K-quants need cols % 256 == 0.
    from elk.convert import Config, Model, Tensor

    c = Config(dim=256, hidden_dim=256, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=512, seq_len=64, tied_output=True)
    rng = np.random.default_rng(3)
    m0 = Model(c, {k: Tensor.of(rng.standard_normal(c.tensor_shape(k[0])).astype(np.float32) * 0.05)
                   for k in c.tensor_keys()}, vocab=bin_model.vocab)
    q6 = q6_k_blocks(512, 256, 1)
    src = tmp_path / "mixed.gguf"
    write_gguf(src, m0, GT.Q5_0, tied=False, raw={"output.weight": (GT.Q6_K, q6)})
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(src)).tensors}
    assert types["output.weight"] == GT.Q6_K and types["blk.0.attn_q.weight"] == GT.Q5_0
    m = gguf_reader.read(src)
    assert not m.config.tied_output
    assert np.array_equal(m.get("OUTPUT"), gguf.quants.dequantize(q6, GT.Q6_K))
    want_q = gguf.quants.dequantize(gguf.quants.quantize(m0.get("WQ", 0), GT.Q5_0), GT.Q5_0)
    assert np.array_equal(m.get("WQ", 0), want_q)
    im.write_image(tmp_path / "mixed.elk", m, quant="q8_0")
    img = im.read_image(tmp_path / "mixed.elk")
    assert img.tensor("OUTPUT").type == "Q8_0"
    np.testing.assert_allclose(img.tensor("OUTPUT").array(), m.get("OUTPUT"), atol=0.01)
