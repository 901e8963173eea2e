"""Generated text is the decode of the ids generated: `elk run`, Model.generate, Model.detokenize and the
emulated board's chat reply (and build/host/elk-run) give what `sentencepiece` / `tokenizers` decode from exactly the ids emitted
(a continuation: prompt ids + generated ids; a templated chat reply: the generated ids alone), a
character split across byte-fallback tokens whole, invalid byte runs replaced as the reference does.

The models: the real stories260K fixture sampled hot (its tok512 vocabulary is half byte pieces), and
llama2.c checkpoints written here whose greedy next token is scripted (embedding row t is one-hot, the
separate classifier maps it to the successor, every layer weight zero), with the fixture Llama 2
tokenizer.model or a tokenizer.json built by the tokenizer tests."""

import struct
import subprocess

import numpy as np
import pytest

from conftest import fixture_path, flashed_board, pack_stories260k, run_elk
from elk.link import connect
from elk.runtime import Model

B = lambda *bs: [b + 3 for b in bs]  # noqa: E731 - byte pieces <0x00>.. start at id 3 (Llama 2, tok512)
HELLO, WORLD, SPACE_PIECE, HELLO2 = 15043, 3186, 29871, 10994  # "▁Hello", "▁world", "▁", "Hello"
PROMPT = "Once upon a time"
# A generation that elk_token_piece + a UTF-8 decoder read differently from the whole-sequence decode:
# 日 and 😀 split over byte pieces, an unfinished 3-byte character (sentencepiece: one U+FFFD per byte),
# a lone space piece, then a word.
GEN = [HELLO] + B(0xE6, 0x97, 0xA5) + [WORLD] + B(0xF0, 0x9F, 0x98, 0x80) + B(0xE5, 0x8F) + [HELLO2, SPACE_PIECE]


def _sp_model(vocab_path=None):
    """sentencepiece over the fixture tokenizer.model, or over another vocabulary's pieces (tok512) put
    into that model's proto (same normalizer, byte fallback and dummy prefix)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    if vocab_path is None:
        return spm.SentencePieceProcessor(model_file=str(fixture_path("tokenizer.model")))
    from elk import tokenizer as T

    v = T.load(vocab_path)
    m = pb.ModelProto()
    m.ParseFromString(fixture_path("tokenizer.model").read_bytes())
    del m.pieces[:]
    for piece, score, kind in zip(v.pieces, v.scores, v.types):
        m.pieces.add(piece=piece, score=float(score), type=int(kind))
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


def scripted_checkpoint(path, vocab_size, chains, end, dim=64, seq_len=128):
    """llama2.c v0 file whose greedy successor of chain[i] is chain[i + 1] (of the last: `end`), for each
    chain of `chains` (no id in two places)."""
    steps = [(t, nxt) for c in chains for t, nxt in zip(c, c[1:] + [end])]
    assert len({t for t, _ in steps}) == len(steps) <= dim
    n_layers, n_heads, hidden = 1, 4, 32
    emb = np.zeros((vocab_size, dim), np.float32)
    cls = np.zeros((vocab_size, dim), np.float32)
    for slot, (t, nxt) in enumerate(steps):
        emb[t, slot] = 1.0
        cls[nxt, slot] = 10.0
    head_dim = dim // n_heads
    zeros = lambda n: np.zeros(n, np.float32).tobytes()  # noqa: E731
    ones = np.ones(dim, np.float32).tobytes()
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", dim, hidden, n_layers, n_heads, n_heads, -vocab_size, seq_len))
        f.write(emb.tobytes() + ones * n_layers + zeros(4 * n_layers * dim * dim) + ones * n_layers)
        f.write(zeros(3 * n_layers * hidden * dim) + ones + zeros(seq_len * head_dim) + cls.tobytes())
    return path


def _image(tmp_path, name, tokenizer, vocab_size, chains, end=2, template=None):
    from elk.convert import load_model
    from elk.image import write_image

    ckpt = scripted_checkpoint(tmp_path / f"{name}.bin", vocab_size, chains, end)
    model = load_model(str(ckpt), tokenizer=str(tokenizer))
    model.chat_template = template
    write_image(str(tmp_path / f"{name}.elk"), model)
    return tmp_path / f"{name}.elk"


@pytest.fixture(scope="module")
def llama_image(tmp_path_factory, host_build):
    sp = _sp_model()
    prompt_ids = [sp.bos_id()] + sp.encode(PROMPT)
    return _image(tmp_path_factory.mktemp("spm"), "llama", fixture_path("tokenizer.model"), 32000,
                  [[prompt_ids[-1]] + GEN]), prompt_ids


def test_elk_run_and_generate_continue_the_prompt_as_sentencepiece_decodes(llama_image, host_build):
    image, prompt_ids = llama_image
    sp = _sp_model()
    with Model(image) as m:
        ids = [t for t, _ in m.generate_tokens(PROMPT, max_tokens=40, temperature=0)]
        assert ids == GEN  # the scripted model does what it was written for
        want = sp.decode(prompt_ids + ids)
        chunks = list(m.generate(PROMPT, max_tokens=40, temperature=0))
        assert PROMPT + "".join(chunks) == want
        assert "日" in chunks and "😀" in chunks  # each split character came out whole, in one chunk
        assert "\ufffd\ufffd" in want  # the unfinished character: one U+FFFD per byte, as sentencepiece
        assert m.detokenize(ids) == sp.decode(ids)
        assert m.detokenize(prompt_ids + ids) == want
    r = run_elk("run", image, "-p", PROMPT, "-n", "40", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == want + "\n"
    r = subprocess.run([str(host_build / "elk-run"), str(image), "-p", PROMPT, "-n", "40", "--temperature", "0"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode("utf-8") == want


def test_every_step_of_the_host_api_is_whole_utf8(llama_image):
    """The C side of Model.generate: each step's bytes are UTF-8 on their own (no decoder in between), the
    held bytes come in the step that completes them, and a buffer below ELK_GEN_TEXT_CAP is one error."""
    image, prompt_ids = llama_image
    with Model(image) as m:
        ffi, lib = m._ffi, m._lib
        ids = ffi.new("int32_t[]", prompt_ids)
        tok, buf, n = ffi.new("int32_t *"), ffi.new("char[]", 4096), ffi.new("int *")
        assert lib.elk_host_gen_begin(m._handle(), ids, len(prompt_ids), 40, 0.0, 0, 1.0, 1.0, 0, 0, 0) == 0
        assert lib.elk_host_gen_text_begin(m._handle(), ids, len(prompt_ids)) == 0
        assert lib.elk_host_gen_next_text(m._handle(), tok, buf, 4095, n) < 0
        assert "4096 needed" in ffi.string(lib.elk_host_error(m._handle())).decode()
        steps = []
        while (rc := lib.elk_host_gen_next_text(m._handle(), tok, buf, 4096, n)) == 1:
            steps.append((tok[0], ffi.unpack(buf, n[0])))
        assert rc == 0
    texts = [b.decode("utf-8") for _, b in steps]  # strict: a split character would raise here
    assert [t for t, _ in steps] == GEN
    assert texts[1:4] == ["", "", "日"]  # <0xE6> <0x97> held, out with <0xA5>


def test_stories260k_sampled_hot_streams_as_sentencepiece_decodes(tmp_path, host_build):
    sp = _sp_model(fixture_path("tok512.bin"))
    image = pack_stories260k(tmp_path / "s260.elk")
    opts = dict(max_tokens=100, temperature=30.0, top_k=0, top_p=1.0)
    with Model(image) as m:
        prompt_ids = m.tokenize(PROMPT)
        for seed in range(40):  # the first seed whose text has a split character and an invalid byte run
            ids = [t for t, _ in m.generate_tokens(PROMPT, seed=seed, **opts)]
            text = sp.decode(ids)
            if any(ord(c) > 0x7F and c != "\ufffd" for c in text) and "\ufffd" in text:
                break
        else:
            pytest.fail("no seed in 0..39 sampled a split character and an invalid byte run")
        want = sp.decode(prompt_ids + ids)
        assert PROMPT + "".join(m.generate(PROMPT, seed=seed, **opts)) == want
    r = run_elk("run", image, "-p", PROMPT, "-n", "100", "--temperature", "30", "--top-k", "0", "--top-p", "1",
                "--seed", str(seed))
    assert r.returncode == 0, r.stderr
    assert r.stdout == want + "\n"


def test_board_chat_reply_is_tokenizers_decode_of_the_generated_ids(tmp_path, host_build):
    """ChatML with <|im_start|>/<|im_end|> special (a tokenizer.json, tokenizers' rules): the reply after
    "assistant\\n" reads as tokenizers decodes the generated ids alone: no leading space, 日 whole."""
    from tokenizers import Tokenizer

    from test_tokenizer_conformance import _spm_json

    (tmp_path / "tokenizer.json").write_text(_spm_json("legacy"), encoding="utf-8")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    nl = hf.token_to_id("<0x0A>")  # the template's last token: "assistant\n"
    time_id = hf.encode(PROMPT).ids[-1]  # a raw prompt's last token
    gen_raw = [hf.token_to_id("▁there")] + B(0xC3, 0xA9)  # " thereé", é over two byte pieces
    image = _image(tmp_path, "chatml", tmp_path / "tokenizer.json", hf.get_vocab_size(),
                   [[nl] + GEN, [time_id] + gen_raw], template="chatml")
    want = hf.decode(GEN)
    assert want.startswith("Hello")
    with flashed_board(image) as emu, connect(emu.port, 0) as link:
        reply = "".join(link.generate("Tell me", max_tokens=40, temperature=0, reset=True))
        assert link.last_stats.gen_tokens == len(GEN)
        assert reply == want
        # raw: the prompt's text goes on (its ids are read first), as `elk run` prints it
        raw = "".join(link.generate(PROMPT, max_tokens=40, temperature=0, reset=True, raw=True))
    with Model(image) as m:
        prompt_ids = m.tokenize(PROMPT)
        assert [t for t, _ in m.generate_tokens(prompt_ids, max_tokens=40, temperature=0)] == gen_raw
    assert PROMPT + raw == hf.decode(prompt_ids + gen_raw) == PROMPT + " thereé"
