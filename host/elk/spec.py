"""The one source of every constant shared by the C runtime and the Python tool.

`python -m elk.spec` regenerates firmware/include/elk/spec.h from this file; a test
(tests/test_spec_header.py) fails when the committed header differs from what this file produces.
Byte layouts are specified in docs/image-format.md and docs/protocol.md; this file only names numbers.
"""

# ---------------------------------------------------------------------------------------------
# Image format v1 (docs/image-format.md)

IMAGE_MAGIC = 0x314B4C45  # bytes "ELK1" little-endian; changes with every incompatible version
IMAGE_VERSION = 1
IMAGE_HEADER_SIZE = 256  # bytes; header_size in the header lets newer writers append fields
IMAGE_ALIGN = 64  # minimum alignment of every section and tensor, in bytes (cache line, NEON/AVX loads)
SECTION_ENTRY_SIZE = 32
TENSOR_ENTRY_SIZE = 96
TENSOR_NAME_MAX = 48  # including the NUL terminator
TOKEN_ENTRY_SIZE = 16
MODEL_NAME_MAX = 64
TRAILER_MAGIC = 0x544B4C45  # bytes "ELKT": optional trailer (signatures) after the payload
MAX_SECTIONS = 16  # section_count is 1 .. MAX_SECTIONS
SECTION_VERSION = 1  # version field of every section entry in image v1
TENSOR_TABLE_HEAD_SIZE = 16  # bytes: u32 count, u32 entry_size, u64 reserved
TOKENIZER_HEAD_SIZE = 32  # bytes before the TOKENIZER section's token entries

# Header field offsets (little-endian). Every field is listed; gaps are reserved (zero).
HEADER_FIELDS = [
    # (name, offset, C type)
    ("magic", 0, "u32"),
    ("version", 4, "u16"),
    ("header_size", 6, "u16"),
    ("flags", 8, "u32"),
    ("alignment", 12, "u32"),
    ("image_size", 16, "u64"),  # header + payload, excluding any trailer
    ("section_table_offset", 24, "u64"),
    ("section_count", 32, "u32"),
    ("section_entry_size", 36, "u32"),
    ("payload_offset", 40, "u64"),
    ("payload_size", 48, "u64"),
    ("payload_sha256", 56, "u8[32]"),
    ("security_counter", 88, "u32"),
    ("arch", 96, "u32"),
    ("dim", 100, "u32"),
    ("hidden_dim", 104, "u32"),
    ("n_layers", 108, "u32"),
    ("n_heads", 112, "u32"),
    ("n_kv_heads", 116, "u32"),
    ("vocab_size", 120, "u32"),
    ("seq_len", 124, "u32"),
    ("rope_theta", 128, "f32"),
    ("norm_eps", 132, "f32"),
    ("head_dim", 136, "u32"),
    ("model_flags", 140, "u32"),
    ("name", 160, "char[64]"),
    ("header_crc32", 252, "u32"),  # CRC-32 (ISO-HDLC, zlib's) over bytes [0, header_size - 4)
]

ARCH_LLAMA = 1

# model_flags bits
MODEL_FLAG_TIED_OUTPUT = 1 << 0  # no OUTPUT tensor: logits use TOK_EMBD

# header flags bits
IMAGE_FLAG_HAS_TRAILER = 1 << 0

# Section kinds; each kind appears at most once in an image.
SECTION_KINDS = {
    "TENSOR_TABLE": 1,
    "TENSOR_DATA": 2,
    "TOKENIZER": 3,
    "METADATA": 4,
    "NPU": 5,
}

# Tensor types: the numbers are ggml's, so GGUF type ids map one to one. Removed or
# unsupported ggml types are simply absent; a reader rejects any id not listed here.
TENSOR_TYPES = {
    # name: (id, block_elems, block_bytes)
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "Q4_0": (2, 32, 18),  # fp16 scale d, 16 bytes of nibbles: x[i] = d*(lo_i - 8), x[i+16] = d*(hi_i - 8)
    "Q8_0": (8, 32, 34),  # fp16 scale d, 32 x int8: x[i] = d*q[i]
    "BF16": (30, 1, 2),   # import only; the packer converts it to F32/F16/quantized types
}
QK = 32  # elements per quantization block

# Tensor roles; `layer` is the block index for per-layer roles, 0 otherwise.
# Shapes are (rows, cols) row-major; a linear layer y = W x has W of shape (out, in).
TENSOR_ROLES = {
    "TOK_EMBD": 1,     # (vocab, dim)
    "ATTN_NORM": 2,    # (dim,)
    "WQ": 3,           # (n_heads * head_dim, dim), RoPE pairs interleaved (x[2i], x[2i+1])
    "WK": 4,           # (n_kv_heads * head_dim, dim), same RoPE convention
    "WV": 5,           # (n_kv_heads * head_dim, dim)
    "WO": 6,           # (dim, n_heads * head_dim)
    "FFN_NORM": 7,     # (dim,)
    "W1": 8,           # gate (hidden_dim, dim)
    "W2": 9,           # down (dim, hidden_dim)
    "W3": 10,          # up   (hidden_dim, dim)
    "OUTPUT_NORM": 11, # (dim,)
    "OUTPUT": 12,      # (vocab, dim); absent when MODEL_FLAG_TIED_OUTPUT
    "ROPE_FREQS": 13,  # (1, head_dim / 2) F32, optional: per-frequency divisors of RoPE's inverse
                       # frequencies (Llama 3 RoPE scaling; llama.cpp's rope_freqs): angle_i =
                       # pos * (theta^(-2i/head_dim) / f_i); absent means every f_i = 1
}
OPTIONAL_ROLES = ("ROPE_FREQS",)  # roles an image may omit (every other one is required)
PER_LAYER_ROLES = ("ATTN_NORM", "WQ", "WK", "WV", "WO", "FFN_NORM", "W1", "W2", "W3")

# Tensor names in images follow GGUF's llama naming; {L} is the layer index.
TENSOR_NAMES = {
    "TOK_EMBD": "token_embd.weight",
    "ATTN_NORM": "blk.{L}.attn_norm.weight",
    "WQ": "blk.{L}.attn_q.weight",
    "WK": "blk.{L}.attn_k.weight",
    "WV": "blk.{L}.attn_v.weight",
    "WO": "blk.{L}.attn_output.weight",
    "FFN_NORM": "blk.{L}.ffn_norm.weight",
    "W1": "blk.{L}.ffn_gate.weight",
    "W2": "blk.{L}.ffn_down.weight",
    "W3": "blk.{L}.ffn_up.weight",
    "OUTPUT_NORM": "output_norm.weight",
    "OUTPUT": "output.weight",
    "ROPE_FREQS": "rope_freqs.weight",
}

# Tokenizer section
TOKENIZER_KIND_SPM_BPE = 1  # SentencePiece BPE (Llama 1/2, TinyLlama), scores = merge priority
# Byte-level BPE (GPT-2 style: SmolLM, SmolLM2): pieces in GPT-2's byte-to-char spelling, GPT-2's split
# pattern, scores = -merge rank; the string blob starts with n_tokens x u16 "left part length" of the
# merge that made each piece (0: none), padded to 4 bytes (docs/image-format.md)
TOKENIZER_KIND_BYTE_BPE = 2
TOKEN_TYPES = {  # SentencePiece's piece types
    "NORMAL": 1,
    "UNKNOWN": 2,
    "CONTROL": 3,
    "USER_DEFINED": 4,
    "UNUSED": 5,
    "BYTE": 6,
}
TOKENIZER_FLAG_BYTE_FALLBACK = 1 << 0
TOKENIZER_FLAG_ADD_DUMMY_PREFIX = 1 << 1
TOKENIZER_FLAG_REMOVE_EXTRA_WHITESPACE = 1 << 2
# The section ends with a stop-id list: n x i32 token id, then u32 n (1..TOKENIZER_MAX_STOP_IDS), the
# section's last 4 bytes. Generation stops at eos_id and at every listed id. Set only when the model has
# stop ids besides eos_id (chat models: <|im_end|>, <|eot_id|>), so other images keep their bytes.
TOKENIZER_FLAG_STOP_IDS = 1 << 3
TOKENIZER_MAX_STOP_IDS = 16
TOKENIZER_FLAG_SPLIT_DIGITS = 1 << 4  # byte-level: every number character is a pre-token of its own
# byte-level: Llama 3's split pattern instead of GPT-2's (case-insensitive contractions, \p{N}{1,3}, a
# non-letter prefix on letter runs, newline runs apart; docs/tokenizer.md)
TOKENIZER_FLAG_LLAMA3_SPLIT = 1 << 5
# byte-level: a pre-token that is itself a normal piece is that piece, unmerged (tokenizers' ignore_merges)
TOKENIZER_FLAG_IGNORE_MERGES = 1 << 6
# SentencePiece kind, with ADD_DUMMY_PREFIX (Hugging Face tokenizer.json files; docs/tokenizer.md):
# text after a special token gets the dummy prefix too (the legacy Prepend("▁") normalizer, Metaspace
# prepend_scheme "always"), and no dummy prefix goes on text that starts with a space or "▁" (Metaspace)
TOKENIZER_FLAG_PREFIX_SEGMENTS = 1 << 7
TOKENIZER_FLAG_PREFIX_UNLESS_SPACE = 1 << 8
# SentencePiece kind: user-defined pieces are split off the raw text before normalization, as tokenizers
# splits off added tokens, and the text after one is a new segment (dummy prefix as the PREFIX flags say)
TOKENIZER_FLAG_USER_SPLIT_RAW = 1 << 9
# Added-token options (tokenizers' lstrip / rstrip / single_word) for pieces matched whole in the raw
# text: before the stop-id list (or at the end without one) the section holds k x (i32 id, u32 options),
# ids ascending, then u32 k (1..TOKENIZER_MAX_ADDED_OPTIONS). A reader without this flag refuses the image.
TOKENIZER_FLAG_ADDED_OPTIONS = 1 << 10
TOKENIZER_MAX_ADDED_OPTIONS = 4096
TOKENIZER_ADDED_LSTRIP = 1 << 0  # the white space before a match belongs to the token
TOKENIZER_ADDED_RSTRIP = 1 << 1  # the white space after a match belongs to the token
TOKENIZER_ADDED_SINGLE_WORD = 1 << 2  # a match with a word character (\w) right before or after it is text
# a kind-1 user-defined piece split off the raw text although the section has no USER_SPLIT_RAW (tokenizers'
# normalized: false beside normalized: true tokens)
TOKENIZER_ADDED_RAW = 1 << 3

# ---------------------------------------------------------------------------------------------
# Trust (docs/trust.md): image trailer TLVs, signature message prefixes, the provisioning record.

TRAILER_HEAD_SIZE = 8  # u32 magic "ELKT", u32 total trailer bytes (head included)
TRAILER_TLV_HEAD_SIZE = 8  # u16 type, u16 reserved (0), u32 value length
TRAILER_MAX_SIZE = 4096  # bytes; readers reject longer trailers before parsing them
TRAILER_TLV = {
    "KEY_ID": 1,        # u8[8]: first 8 bytes of SHA-256(Ed25519 public key)
    "IMAGE_SHA256": 2,  # u8[32]: SHA-256 of image bytes [0, image_size) (header + payload)
    "ED25519": 3,       # u8[64]: Ed25519 signature over SIGN_CONTEXT_IMAGE || IMAGE_SHA256
}
TRUST_KEY_ID_SIZE = 8
TRUST_NONCE_SIZE = 16  # TRUST_INFO's board challenge, signed into re-provisioning requests (new after each PROVISION)
SIGN_CONTEXT_IMAGE = b"elk image sig v1"  # 16 bytes: keeps an image signature from passing as anything else
SIGN_CONTEXT_PROVISION = b"elk provision v1"  # 16 bytes: re-provisioning requests signed by the old key
CHALLENGE_CONTEXT = b"elk challenge v1"  # 16 bytes: hashed into the challenge of a board without an RNG
PROV_MAGIC = 0x504B4C45  # bytes "ELKP" little-endian
PROV_VERSION = 1
PROV_RECORD_SIZE = 128  # one slot; the boot area holds two slots (A/B), the higher valid sequence wins
PROV_FIELDS = [
    # (name, offset, C type)
    ("magic", 0, "u32"),
    ("version", 4, "u16"),
    ("size", 6, "u16"),
    ("sequence", 8, "u32"),  # +1 on every write; 0 never valid
    ("flags", 12, "u32"),  # bit 0: an owner key is set (board refuses unsigned images)
    ("owner_key", 16, "u8[32]"),  # Ed25519 public key
    ("security_floor", 48, "u32"),  # highest security_counter ever committed (anti-rollback)
    ("challenge_counter", 52, "u32"),  # boards without an RNG: next provisioning challenge counter (docs/trust.md)
    ("crc32", 124, "u32"),  # CRC-32 (zlib's) over bytes [0, 124)
]
PROV_FLAG_OWNER_KEY = 1 << 0

# ---------------------------------------------------------------------------------------------
# NPU section (docs/npu.md): per linear layer an int8 FULLY_CONNECTED .tflite + calibration data.

NPU_MAGIC = 0x4E4B4C45  # bytes "ELKN" little-endian
NPU_VERSION = 1
NPU_HEAD_SIZE = 64  # bytes; head_size in the head lets newer writers append fields
NPU_ENTRY_SIZE = 80  # bytes per exported linear layer
NPU_DEFAULT_CHUNK = 32  # prefill tokens per NPU call when the board file names none
NPU_FLAG_SHADOW_OUTLIERS = 1 << 0  # outlier channels recorded: the CPU computes them in float
NPU_ROLES = ("WQ", "WK", "WV", "WO", "W1", "W2", "W3")  # exported roles, in entry order per block
NPU_ENTRY_STATES = {  # the runner's state per entry (elk_npu_runner.state[], elk_host_npu_entry_state)
    "NONE": 0,      # not exported
    "NPU": 1,       # offloaded
    "DECLINED": 2,  # the backend declined it, or its shape is not the model's: the CPU runs it
    "FAILED": 3,    # a chunk failed on the backend: the CPU runs it from then on
}

# ---------------------------------------------------------------------------------------------
# Error codes: C returns 0 or one of these (negative); Python maps each to an ElkError subclass.

ERRORS = {
    # name: (code, message)
    "OK": (0, "ok"),
    "E_INVAL": (-1, "invalid argument"),
    "E_FORMAT": (-2, "not an elk image (bad magic or malformed structure)"),
    "E_VERSION": (-3, "unsupported image version"),
    "E_BOUNDS": (-4, "offset or size outside the image"),
    "E_CRC": (-5, "header CRC mismatch"),
    "E_HASH": (-6, "payload SHA-256 mismatch"),
    "E_NOMEM": (-7, "arena too small"),
    "E_UNSUPPORTED": (-8, "unsupported feature or tensor type"),
    "E_RANGE": (-9, "value out of range"),  # the caller's detail says which value (a full context is one)
    "E_IO": (-10, "input/output error"),
    "E_ABORTED": (-11, "aborted"),
    "E_AUTH": (-12, "signature or key check failed"),
    "E_ROLLBACK": (-13, "image security counter is lower than the running one"),
    "E_TIMEOUT": (-14, "timed out"),
    "E_STATE": (-15, "command not valid in the current state"),
    "E_MISSING": (-16, "required section or tensor missing"),
}

# ---------------------------------------------------------------------------------------------
# Header generation


def _c_header() -> str:
    out = [
        "/* elk shared constants. GENERATED by `python -m elk.spec` from host/elk/spec.py: do not edit.",
        " * tests/test_spec_header.py fails when this file and host/elk/spec.py disagree. */",
        "#ifndef ELK_SPEC_H",
        "#define ELK_SPEC_H",
        "",
    ]

    def define(name, value, comment=None):
        line = f"#define {name} {value}"
        if comment:
            line = f"{line:<56} /* {comment} */"
        out.append(line)

    define("ELK_IMAGE_MAGIC", f"0x{IMAGE_MAGIC:08X}u", '"ELK1" little-endian')
    define("ELK_IMAGE_VERSION", IMAGE_VERSION)
    define("ELK_IMAGE_HEADER_SIZE", IMAGE_HEADER_SIZE)
    define("ELK_IMAGE_ALIGN", IMAGE_ALIGN)
    define("ELK_SECTION_ENTRY_SIZE", SECTION_ENTRY_SIZE)
    define("ELK_TENSOR_ENTRY_SIZE", TENSOR_ENTRY_SIZE)
    define("ELK_TENSOR_NAME_MAX", TENSOR_NAME_MAX)
    define("ELK_TOKEN_ENTRY_SIZE", TOKEN_ENTRY_SIZE)
    define("ELK_MODEL_NAME_MAX", MODEL_NAME_MAX)
    define("ELK_TRAILER_MAGIC", f"0x{TRAILER_MAGIC:08X}u", '"ELKT" little-endian')
    define("ELK_MAX_SECTIONS", f"{MAX_SECTIONS}u")
    define("ELK_SECTION_VERSION", f"{SECTION_VERSION}u")
    define("ELK_TENSOR_TABLE_HEAD_SIZE", f"{TENSOR_TABLE_HEAD_SIZE}u")
    define("ELK_TOKENIZER_HEAD_SIZE", f"{TOKENIZER_HEAD_SIZE}u")
    define("ELK_QK", QK, "elements per quantization block")
    out.append("")
    out.append("/* header field offsets */")
    for name, off, ctype in HEADER_FIELDS:
        define(f"ELK_HDR_{name.upper()}", off, ctype)
    out.append("")
    define("ELK_ARCH_LLAMA", ARCH_LLAMA)
    define("ELK_MODEL_FLAG_TIED_OUTPUT", f"(1u << {MODEL_FLAG_TIED_OUTPUT.bit_length() - 1})")
    define("ELK_IMAGE_FLAG_HAS_TRAILER", f"(1u << {IMAGE_FLAG_HAS_TRAILER.bit_length() - 1})")
    out.append("")
    for name, value in SECTION_KINDS.items():
        define(f"ELK_SECTION_{name}", value)
    define("ELK_SECTION_KIND_MAX", max(SECTION_KINDS.values()))
    define("ELK_SECTION_NAMES", "{ [0] = \"?\", " + ", ".join(
        f'[ELK_SECTION_{name}] = "{name}"' for name in SECTION_KINDS) + " }", "initializer, indexed by kind")
    out.append("")
    out.append("enum elk_type {")
    for name, (tid, _, _) in TENSOR_TYPES.items():
        out.append(f"    ELK_TYPE_{name} = {tid},")
    out.append(f"    ELK_TYPE_COUNT = {max(v[0] for v in TENSOR_TYPES.values()) + 1}")
    out.append("};")
    for name, (_, be, bb) in TENSOR_TYPES.items():
        define(f"ELK_TYPE_{name}_BLOCK_ELEMS", be)
        define(f"ELK_TYPE_{name}_BLOCK_BYTES", bb)
    out.append("")
    out.append("enum elk_role {")
    for name, value in TENSOR_ROLES.items():
        out.append(f"    ELK_ROLE_{name} = {value},")
    out.append(f"    ELK_ROLE_COUNT = {max(TENSOR_ROLES.values()) + 1}")
    out.append("};")
    define("ELK_ROLE_NAMES", "{ [0] = \"?\", " + ", ".join(
        f'[ELK_ROLE_{name}] = "{name}"' for name in TENSOR_ROLES) + " }", "initializer, indexed by role")
    out.append("")
    define("ELK_TOKENIZER_KIND_SPM_BPE", TOKENIZER_KIND_SPM_BPE)
    define("ELK_TOKENIZER_KIND_BYTE_BPE", TOKENIZER_KIND_BYTE_BPE)
    for name, value in TOKEN_TYPES.items():
        define(f"ELK_TOKEN_{name}", value)
    define("ELK_TOKENIZER_FLAG_BYTE_FALLBACK", "(1u << 0)")
    define("ELK_TOKENIZER_FLAG_ADD_DUMMY_PREFIX", "(1u << 1)")
    define("ELK_TOKENIZER_FLAG_REMOVE_EXTRA_WHITESPACE", "(1u << 2)")
    define("ELK_TOKENIZER_FLAG_STOP_IDS", "(1u << 3)")
    define("ELK_TOKENIZER_MAX_STOP_IDS", TOKENIZER_MAX_STOP_IDS)
    define("ELK_TOKENIZER_FLAG_SPLIT_DIGITS", "(1u << 4)")
    define("ELK_TOKENIZER_FLAG_LLAMA3_SPLIT", "(1u << 5)")
    define("ELK_TOKENIZER_FLAG_IGNORE_MERGES", "(1u << 6)")
    define("ELK_TOKENIZER_FLAG_PREFIX_SEGMENTS", "(1u << 7)")
    define("ELK_TOKENIZER_FLAG_PREFIX_UNLESS_SPACE", "(1u << 8)")
    define("ELK_TOKENIZER_FLAG_USER_SPLIT_RAW", "(1u << 9)")
    define("ELK_TOKENIZER_FLAG_ADDED_OPTIONS", "(1u << 10)")
    define("ELK_TOKENIZER_MAX_ADDED_OPTIONS", TOKENIZER_MAX_ADDED_OPTIONS)
    define("ELK_TOKENIZER_ADDED_LSTRIP", "(1u << 0)")
    define("ELK_TOKENIZER_ADDED_RSTRIP", "(1u << 1)")
    define("ELK_TOKENIZER_ADDED_SINGLE_WORD", "(1u << 2)")
    define("ELK_TOKENIZER_ADDED_RAW", "(1u << 3)")
    out.append("")
    define("ELK_TRAILER_HEAD_SIZE", TRAILER_HEAD_SIZE)
    define("ELK_TRAILER_TLV_HEAD_SIZE", TRAILER_TLV_HEAD_SIZE)
    define("ELK_TRAILER_MAX_SIZE", TRAILER_MAX_SIZE)
    for name, value in TRAILER_TLV.items():
        define(f"ELK_TLV_{name}", value)
    define("ELK_TRUST_KEY_ID_SIZE", TRUST_KEY_ID_SIZE)
    define("ELK_TRUST_NONCE_SIZE", TRUST_NONCE_SIZE)
    define("ELK_SIGN_CONTEXT_IMAGE", '"' + SIGN_CONTEXT_IMAGE.decode() + '"', "16 bytes, no NUL")
    define("ELK_SIGN_CONTEXT_PROVISION", '"' + SIGN_CONTEXT_PROVISION.decode() + '"', "16 bytes, no NUL")
    define("ELK_CHALLENGE_CONTEXT", '"' + CHALLENGE_CONTEXT.decode() + '"', "16 bytes, no NUL")
    define("ELK_PROV_MAGIC", f"0x{PROV_MAGIC:08X}u", '"ELKP" little-endian')
    define("ELK_PROV_VERSION", PROV_VERSION)
    define("ELK_PROV_RECORD_SIZE", PROV_RECORD_SIZE)
    for name, off, ctype in PROV_FIELDS:
        define(f"ELK_PROVOFF_{name.upper()}", off, ctype)
    define("ELK_PROV_FLAG_OWNER_KEY", "(1u << 0)")
    out.append("")
    define("ELK_NPU_MAGIC", f"0x{NPU_MAGIC:08X}u", '"ELKN" little-endian')
    define("ELK_NPU_VERSION", NPU_VERSION)
    define("ELK_NPU_HEAD_SIZE", NPU_HEAD_SIZE)
    define("ELK_NPU_ENTRY_SIZE", NPU_ENTRY_SIZE)
    define("ELK_NPU_DEFAULT_CHUNK", NPU_DEFAULT_CHUNK)
    define("ELK_NPU_FLAG_SHADOW_OUTLIERS", "(1u << 0)")
    for name, value in NPU_ENTRY_STATES.items():
        define(f"ELK_NPU_STATE_{name}", value)
    out.append("")
    out.append("enum elk_status {")
    for name, (code, msg) in ERRORS.items():
        out.append(f"    ELK_{name} = {code}, /* {msg} */")
    out.append("};")
    out.append("/* X(code, message) for every status: elk_strerror's table, so C text matches ERRORS here. */")
    out.append("#define ELK_STATUS_LIST(X) \\")
    for name, (code, msg) in ERRORS.items():
        out.append(f'    X(ELK_{name}, "{msg}") \\')
    out.append("")
    out.append("")
    # Protocol constants live in elk/proto_spec.py when the serial link exists; appended here.
    try:
        from elk import proto_spec  # noqa: WPS433 (optional until the serial link lands)
    except ImportError:
        proto_spec = None
    if proto_spec is not None:
        out.extend(proto_spec.c_lines())
        out.append("")
    out.append("#endif /* ELK_SPEC_H */")
    return "\n".join(out) + "\n"


def c_header() -> str:
    """The text of firmware/include/elk/spec.h as this file defines it."""
    return _c_header()


def main() -> None:
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    path = root / "firmware" / "include" / "elk" / "spec.h"
    path.write_text(c_header())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
