"""Write the fuzz seed corpora into tests/fuzz-corpus/<harness>/ (committed; rerun after a format change).

Seeds are small real inputs made by elk's own writers: a tiny packed image (1 layer, 16-token vocab,
random weights; plain and signed), TOKENIZER sections with text, serial frames, provisioning slots
and the board files. Usage: python fuzz/make_seeds.py
"""

from __future__ import annotations

import pathlib
import shutil
import struct
import sys
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
CORPUS = ROOT / "tests" / "fuzz-corpus"
FIXTURES = ROOT.parent / "shared" / "fixtures"

import numpy as np  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from elk import image, proto_spec, spec, tokenizer, trust  # noqa: E402
from elk.convert import Config, Model, Tensor  # noqa: E402

FUZZ_KEY = Ed25519PrivateKey.from_private_bytes(b"\x42" * 32)  # public half is in fuzz/fuzz_trust.c


def tiny_vocab() -> tokenizer.Vocab:
    s = tokenizer.SPACE
    pieces = ["<unk>", "<s>", "</s>", s, "a", "b", "c", s + "a", "ab", s + "ab", "<0x0A>", "<0xE2>",
              "<0x96>", "<0x81>", "bc", s + "b"]
    types = [2, 3, 3] + [1] * 7 + [6] * 4 + [1, 1]
    scores = [0.0] * 3 + [-float(i) for i in range(len(pieces) - 3)]
    return tokenizer.Vocab(pieces=pieces, scores=scores, types=types)


def tiny_model(tied: bool) -> Model:
    cfg = Config(dim=32, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=16, seq_len=32,
                 tied_output=tied)
    rng = np.random.default_rng(7)
    tensors = {}
    for role, layer in cfg.tensor_keys():
        shape = cfg.tensor_shape(role)
        a = np.ones(shape, np.float32) if "NORM" in role else rng.standard_normal(shape).astype(np.float32) * 0.1
        tensors[(role, layer)] = Tensor.of(a)
    return Model(cfg, tensors, vocab=tiny_vocab(), name="fuzz-tiny", source="fuzz/make_seeds.py",
                 chat_template="zephyr")


def write(kind: str, name: str, data: bytes) -> None:
    d = CORPUS / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def image_seeds(tmp: pathlib.Path) -> dict:
    out = {}
    for name, kw in {"tiny-q8": dict(quant="q8_0", tied=False), "tiny-q4-tied": dict(quant="q4_0", tied=True),
                     "tiny-f16": dict(quant="f16", tied=False)}.items():
        path = tmp / f"{name}.elk"
        image.write_image(path, tiny_model(kw["tied"]), quant=kw["quant"])
        data = path.read_bytes()
        assert image.verify_image(path).ok, name
        out[name] = data
        write("image", name + ".elk", data)
    signed = trust.sign_bytes(out["tiny-q8"], FUZZ_KEY, security_counter=2)
    write("image", "tiny-q8-signed.elk", signed)
    out["signed"] = signed
    return out


def tokenizer_seeds() -> None:
    texts = [b"", b"a ab abc", b"Once upon a time", "caf\u00e9 \u2581 \u00e9\n".encode(), b"\xff\xfe\x00a",
             b"a" * 200]
    sec = tokenizer.encode_section(tiny_vocab())
    for i, t in enumerate(texts):
        write("tokenizer", f"tiny-{i}", struct.pack("<I", len(sec)) + sec + t)
    tok512 = FIXTURES / "tok512.bin"
    if tok512.is_file():
        sec = tokenizer.encode_section(tokenizer.load(tok512))
        write("tokenizer", "tok512-story", struct.pack("<I", len(sec)) + sec + b"Once upon a time, there was")


def cobs(raw: bytes) -> bytes:
    out, block = bytearray(), bytearray()
    for b in raw:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += bytes([255]) + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    return bytes(out)


def frame(kind: str, code: int, seq: int, payload: bytes) -> bytes:
    raw = struct.pack("<BBH", proto_spec.FRAME_KINDS[kind], code, seq) + payload
    raw += struct.pack("<I", zlib.crc32(raw))
    return b"\x00" + cobs(raw) + b"\x00"


def frame_seeds() -> None:
    c = proto_spec.COMMANDS
    write("frame", "hello", frame("REQ", c["HELLO"], 1, struct.pack("<HHI", 1, 0, 8192)))
    write("frame", "info-text", b"hello board\r\n" + frame("REQ", c["INFO"], 2, b""))
    write("frame", "flash-data", frame("REQ", c["FLASH_DATA"], 3, struct.pack("<Q", 4096) + bytes(range(256)) * 4))
    write("frame", "two-frames", frame("REQ", c["ABORT"], 4, b"") + frame("EACK", 0, 9, b""))
    write("frame", "nak", frame("NAK", 0, 0, b"\x01"))
    write("frame", "long-zeros", frame("REQ", c["FLASH_DATA"], 5, bytes(600)))


def trust_seeds(images: dict) -> None:
    write("trust", "signed-image", images["signed"])
    size = len(images["tiny-q8"])
    write("trust", "trailer-only", images["signed"][size:])
    rec = trust.encode_prov(trust.ProvRecord(3, spec.PROV_FLAG_OWNER_KEY, trust.public_bytes(FUZZ_KEY), 1))
    newer = trust.encode_prov(trust.ProvRecord(4, spec.PROV_FLAG_OWNER_KEY, bytes(range(32)), 1))
    nonce = bytes(range(200, 200 + spec.TRUST_NONCE_SIZE))  # fuzz_trust.c reads it after the signature
    req_sig = trust.sign_provision_request(FUZZ_KEY, bytes(range(32)), 4, 1, nonce)
    write("trust", "prov-slots-request", rec + newer + bytes(range(32)) + b"\x01\x00\x00\x00" + req_sig + nonce)


def command_seeds(images: dict) -> None:
    """UART byte streams for fuzz_commands.c: whole host sessions, as elk.link frames them."""
    import hashlib

    from elk.link import HOST_PAYLOAD_MAX, encode_frame

    c, req = proto_spec.COMMANDS, proto_spec.FRAME_KINDS["REQ"]
    seq = iter(range(1, 1 << 16))

    def cmd(name, payload=b""):
        return encode_frame(req, c[name], next(seq), payload)

    def session(image: bytes, provision: bytes = b"", prompt: bytes = b"") -> bytes:
        out = cmd("HELLO", struct.pack("<HHI", proto_spec.PROTO_VERSION, 0, HOST_PAYLOAD_MAX))
        out += cmd("INFO") + cmd("TRUST_INFO") + provision
        out += cmd("FLASH_BEGIN", struct.pack("<Q", len(image)) + hashlib.sha256(image).digest())
        for off in range(0, len(image), 4096):
            out += cmd("FLASH_DATA", struct.pack("<Q", off) + image[off:off + 4096])
        out += cmd("FLASH_END") + cmd("BOOT", b"\x00") + cmd("COMMIT", b"\x00") + cmd("INFO")
        if prompt:
            out += cmd("GENERATE", struct.pack("<IIffIfIQ", 1, 8, 0.0, 1.0, 0, 1.0, 0, 1) + prompt)
            eack = proto_spec.FRAME_KINDS["EACK"]
            out += b"".join(encode_frame(eack, 1, s) for s in range(12))
        return out

    pub = trust.public_bytes(FUZZ_KEY)
    prov = cmd("PROVISION", struct.pack("<I", spec.PROV_FLAG_OWNER_KEY) + pub)
    write("commands", "flash-boot-generate", session(images["tiny-q8"], prompt=b"a ab"))
    write("commands", "provision-flash-signed", session(images["signed"], provision=prov))
    write("commands", "provision-refuse-unsigned", session(images["tiny-q4-tied"], provision=prov))
    write("commands", "block-hashes-rollback", session(images["tiny-q8"]) + cmd("BLOCK_HASHES", bytes(20))
          + cmd("ROLLBACK") + cmd("FLASH_COPY", struct.pack("<II", 0, 2)) + cmd("RESET"))


def tiny_tensors(cfg) -> list:
    """(gguf name, float32 array (rows, cols)) of a random tiny model, in llama2.c file order."""
    rng = np.random.default_rng(3)
    out = []
    for role, layer in cfg.tensor_keys():
        rows, cols = cfg.tensor_shape(role)
        a = np.ones((rows, cols), np.float32) if "NORM" in role else rng.standard_normal((rows, cols)).astype(np.float32)
        out.append((role, layer, a * 0.1 if "NORM" not in role else a))
    return out


def checkpoint_seeds() -> None:
    """Byte 0 picks the reader in fuzz_checkpoint.py: 0 llama2.c, 1 GGUF, 2 tokenizer file."""
    import gguf

    from elk.convert import tensor_name

    cfg = Config(dim=8, hidden_dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=16, seq_len=16,
                 tied_output=True)
    ts = {(r, l): a for r, l, a in tiny_tensors(cfg)}
    # llama2.c v0: 7 int32 header (positive vocab = shared classifier), then float32 tensors by kind
    order = ["TOK_EMBD", "ATTN_NORM", "WQ", "WK", "WV", "WO", "FFN_NORM", "W1", "W2", "W3", "OUTPUT_NORM"]
    body = b"".join(ts[(r, 0)].tobytes() for r in order)
    freq = np.zeros(cfg.seq_len * cfg.head_dim // 2, np.float32).tobytes()
    head = struct.pack("<7i", cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                       cfg.vocab_size, cfg.seq_len)
    write("checkpoint", "llama2c-tiny", b"\x00" + head + body + freq + freq)
    # GGUF written by the gguf package itself
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "t.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_context_length(cfg.seq_len)
        w.add_embedding_length(cfg.dim)
        w.add_feed_forward_length(cfg.hidden_dim)
        w.add_block_count(cfg.n_layers)
        w.add_head_count(cfg.n_heads)
        w.add_head_count_kv(cfg.n_kv_heads)
        w.add_layer_norm_rms_eps(1e-5)
        v = tiny_vocab()
        w.add_tokenizer_model("llama")
        w.add_token_list(v.pieces)
        w.add_token_scores(v.scores)
        w.add_token_types(v.types)
        for (role, layer), a in ts.items():
            w.add_tensor(tensor_name(role, layer), a)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        write("checkpoint", "gguf-tiny", b"\x01" + path.read_bytes())
    tok512 = FIXTURES / "tok512.bin"
    if tok512.is_file():
        write("checkpoint", "tokenizer-tok512", b"\x02" + tok512.read_bytes())


def host_seeds(images: dict) -> None:
    """fuzz_host.py: byte 0 picks the parser (0 board replies, 1 image file, 2 signed-image checks)."""
    from elk.link import encode_frame

    k = proto_spec.FRAME_KINDS
    info = bytearray(2 + 400)  # i16 status 0, then INFO fields (docs/protocol.md) with a few set
    struct.pack_into("<HIIII", info, 2, proto_spec.PROTO_VERSION, 0x3F, 8208, 0, 3000000)
    info[2 + 58:2 + 62] = b"fuzz"
    stats = struct.pack("<B3xIIIIIIiII", 0, 5, 8, 1200, 9000, 13, 32, 0, 0, 0)
    write("host", "replies", b"\x00" + b"console text\r\n" + encode_frame(k["RESP"], 2, 7, bytes(info))
          + encode_frame(k["EVENT"], 1, 0, b"Once") + encode_frame(k["EVENT"], 2, 1, stats))
    write("host", "image", b"\x01" + images["tiny-q8"])
    write("host", "image-signed", b"\x01" + images["signed"])
    write("host", "signed-checks", b"\x02" + images["signed"])
    write("host", "info-payload", b"\x03" + bytes(info[2:]))
    write("host", "stats-payload", b"\x03" + stats)


def board_seeds() -> None:
    for p in sorted((ROOT / "boards").glob("*.toml")):
        d = CORPUS / "boards"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, d / p.name)


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        images = image_seeds(pathlib.Path(tmp))
    tokenizer_seeds()
    frame_seeds()
    trust_seeds(images)
    command_seeds(images)
    checkpoint_seeds()
    host_seeds(images)
    board_seeds()
    for d in sorted(CORPUS.iterdir()):
        if d.is_dir() and d.name != "regressions":
            print(f"{d.relative_to(ROOT)}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()
