"""Fit and speed planner: will this image fit this board, and how fast will it run?

Fit: the image must fit one A/B flash slot (the firmware's layout, firmware/src/main/bootrec.c:
two erase blocks of boot record, then two equal slots rounded down to whole erase blocks), and RAM
must hold the KV cache, the activation scratch for one prefill batch, the sampler/tokenizer tables and
the runtime. Weights are used in place from flash (memory-mapped), so they are not counted in RAM.

Speed (first-order models, not measurements; `elk bench` measures):
- decode: roofline, one token reads every weight once (plus the KV cache so far) at the DRAM
  bandwidth, capped by 2 x params operations per token at the board's sustained cpu_gops;
- prefill on the CPU: 2 x params x tokens operations at the board's sustained cpu_gops, or the weight
  stream per batch if that is slower;
- prefill on the NPU: the same operations at TOPS x efficiency in chunks of prefill_chunk_tokens, or
  the weight stream per chunk over the NPU's DMA if that is slower;
- decode on the NPU (one token per pass): the weight stream over the NPU's DMA, capped by 2 x params
  operations at TOPS x efficiency. elk itself decodes on the CPU; the figure says what an NPU decode
  could reach.
Not here: the NPU section itself (elk.npu) or running anything.
"""

from __future__ import annotations

import dataclasses
import os

from elk import boards as elk_boards
from elk import image as elk_image
from elk import spec
from elk.errors import ElkError

MIB = 1 << 20
CPU_PREFILL_BATCH = 64        # the runtime's default max_batch (firmware/src/model/model.c)
RUNTIME_BYTES = 4 * MIB       # code, stacks, libc and the protocol buffers: a planning allowance
MATMUL_ROLES = ("WQ", "WK", "WV", "WO", "W1", "W2", "W3", "OUTPUT")


class PlanError(ElkError):
    pass


@dataclasses.dataclass
class Plan:
    board: str
    image: str
    n_ctx: int
    ctx_clamped: bool
    image_bytes: int
    slot_bytes: int
    ram_bytes: int
    ram_parts: dict           # name -> bytes
    params: int               # weights multiplied per token (linear layers + output)
    weight_bytes_per_token: int
    decode_tps: float         # empty context
    decode_tps_full_ctx: float
    decode_bound: str         # "bandwidth" or "compute" (which roofline limits decode)
    prefill_tps_cpu: float
    npu: dict                 # {} or kind, dtype, prefill_tps, speedup

    @property
    def ram_needed(self) -> int:
        return sum(self.ram_parts.values())

    @property
    def fits_flash(self) -> bool:
        return self.image_bytes <= self.slot_bytes

    @property
    def fits_ram(self) -> bool:
        return self.ram_needed <= self.ram_bytes

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(ram_needed=self.ram_needed, fits_flash=self.fits_flash, fits_ram=self.fits_ram)
        return d


def slot_bytes(board: elk_boards.Board) -> int:
    """Bytes of one A/B image slot, as the firmware lays out flash (bootrec.c elk_fw_layout)."""
    e = board.erase_block_kb * 1024
    flash = board.flash_mb * MIB
    slot = (flash - 2 * e) // 2 if flash > 2 * e else 0
    return slot // e * e


def scratch_bytes(cfg, n_ctx: int, batch: int) -> int:
    """Activation arena for `batch` tokens, mirroring the layout in firmware/src/model/model.c, plus
    an allowance for the model and per-layer structs and the 64-byte alignment of each carve."""
    q_dim = cfg.n_heads * cfg.head_dim
    kv_dim = cfg.n_kv_heads * cfg.head_dim
    widest = max(cfg.dim, q_dim, cfg.hidden_dim)
    floats = batch * (2 * cfg.dim + 2 * q_dim + 2 * kv_dim + 2 * cfg.hidden_dim)
    floats += cfg.n_heads * n_ctx + batch * 2 * cfg.head_dim  # attention scores, RoPE cos/sin tables per token
    xq_row = -(-widest // spec.QK) * spec.TENSOR_TYPES["Q8_0"][2]
    structs = 20 * 64 + 4096 + 1024 * cfg.n_layers
    return 4 * floats + batch * xq_row + structs


def tokenizer_bytes(vocab_size: int) -> int:
    """The C tokenizer's arena (firmware/src/tokenizer/tokenizer.c): fixed encode buffers (< 128 KiB)
    and a power-of-two hash table of at least 2 slots of 4 bytes per mergeable piece (<= vocab)."""
    slots = 16
    while slots < 2 * vocab_size:
        slots <<= 1
    return 128 * 1024 + 4 * slots


def sampler_tokens_bytes(vocab_size: int, n_ctx: int) -> int:
    """Sampler arena (two float rows and a byte per token id), the conversation's token ids and the
    decode loop's arena (ids and one logits row), as the firmware takes them (main/gen.c)."""
    return 8 * n_ctx + 13 * vocab_size + 2048


def npu_scratch_bytes(img, board) -> int:
    """The NPU runner's arena (firmware/src/npu/npu.c: chunk x (widest rows + widest cols) + 64, taken
    from board RAM at boot) when the board has an NPU and the image an NPU section; 0 otherwise,
    also for a section the firmware would refuse (it then serves on the CPU)."""
    if board.npu["kind"] == "none" or img.npu is None:
        return 0
    from elk.npu.section import parse_section

    try:
        sec = parse_section(img.npu)
    except ElkError:
        return 0
    if not sec.layers:
        return 0
    return sec.chunk * (max(L.rows for L in sec.layers) + max(L.cols for L in sec.layers)) + 128


def _dominant_type(img) -> str:
    by_type = {}
    for t in img.tensors.values():
        if t.role in MATMUL_ROLES or (t.role == "TOK_EMBD" and img.config.tied_output):
            by_type[t.type] = by_type.get(t.type, 0) + t.size
    return max(by_type, key=by_type.get) if by_type else "F32"


def _npu_plan(board, params: int, weight_bytes: int, wtype: str, cpu_tps: float) -> dict:
    npu = board.npu
    if npu["kind"] == "none":
        return {}
    tops = npu["tops"]
    if wtype == "Q4_0" and "int4" in tops:
        dtype = "int4"
    elif "int8" in tops:
        dtype = "int8"
    else:
        dtype = max(tops, key=tops.get)
    chunk = npu["prefill_chunk_tokens"]
    compute_s = 2.0 * params * chunk / (tops[dtype] * 1e12 * npu["efficiency"])
    dma_s = weight_bytes / (npu["dma_gbs"] * 1e9)
    tps = chunk / max(compute_s, dma_s)
    # decode: one token per pass, every weight streamed over the DMA
    decode_s = max(2.0 * params / (tops[dtype] * 1e12 * npu["efficiency"]), dma_s)
    return {"kind": npu["kind"], "dtype": dtype, "tops": tops[dtype], "chunk_tokens": chunk,
            "prefill_tps": tps, "speedup": tps / cpu_tps if cpu_tps else 0.0,
            "bound": "compute" if compute_s >= dma_s else "dma", "decode_tps": 1.0 / decode_s,
            "decode_bound": "dma" if dma_s >= decode_s else "compute"}


def plan(image_path, board_name: str, ctx: int | None = None) -> Plan:
    """Plan `image_path` on board `board_name`; raises ElkError for a bad image, board or ctx."""
    board = elk_boards.load(board_name)
    img = elk_image.read_image(image_path)
    cfg = img.config
    if ctx is not None and ctx < 1:
        raise PlanError(f"--ctx must be at least 1 (got {ctx})")
    n_ctx = min(ctx or cfg.seq_len, cfg.seq_len)
    kv = 2 * cfg.n_layers * n_ctx * cfg.n_kv_heads * cfg.head_dim * 4

    matmul = [t for t in img.tensors.values() if t.role in MATMUL_ROLES]
    embd = img.tensor("TOK_EMBD")
    params = sum(t.rows * t.cols for t in matmul)
    weight_bytes = sum(t.size for t in matmul) + sum(t.size for t in img.tensors.values()
                                                     if t.role in ("ATTN_NORM", "FFN_NORM", "OUTPUT_NORM"))
    if cfg.tied_output:  # logits read the whole embedding table every token
        params += embd.rows * embd.cols
        weight_bytes += embd.size
    else:  # one embedding row per token
        weight_bytes += embd.size // max(embd.rows, 1)

    ram_parts = {
        "kv_cache": kv,
        "activations": scratch_bytes(cfg, n_ctx, CPU_PREFILL_BATCH),
        "sampler_tokens": sampler_tokens_bytes(cfg.vocab_size, n_ctx),
        "tokenizer": tokenizer_bytes(cfg.vocab_size),
        "runtime": RUNTIME_BYTES,
    }
    npu_scratch = npu_scratch_bytes(img, board)
    if npu_scratch:
        ram_parts["npu_scratch"] = npu_scratch
    bw = board.mem_bandwidth_gbs * 1e9
    ops = board.cpu_gops * 1e9
    compute_tps = ops / (2.0 * params)  # decode cannot beat the CPU's arithmetic either
    batch = CPU_PREFILL_BATCH
    cpu_batch_s = max(2.0 * params * batch / (board.cpu_gops * 1e9), weight_bytes / bw)
    prefill_cpu = batch / cpu_batch_s
    npu_plan = _npu_plan(board, params, weight_bytes, _dominant_type(img), prefill_cpu)
    if npu_plan:  # elk's own offload path (NPU section, block linears in int8): elk.npu.predict
        from elk.npu.predict import offload_prediction

        npu_plan["elk"] = offload_prediction(img, board, prefill_cpu)
    return Plan(
        board=board.name, image=str(image_path), n_ctx=n_ctx, ctx_clamped=bool(ctx and ctx > cfg.seq_len),
        image_bytes=os.path.getsize(image_path), slot_bytes=slot_bytes(board),
        ram_bytes=board.ram_mb * MIB, ram_parts=ram_parts, params=params,
        weight_bytes_per_token=weight_bytes, decode_tps=min(bw / weight_bytes, compute_tps),
        decode_tps_full_ctx=min(bw / (weight_bytes + kv), compute_tps),
        decode_bound="bandwidth" if bw / weight_bytes <= compute_tps else "compute", prefill_tps_cpu=prefill_cpu,
        npu=npu_plan,
    )


def _size(n: int) -> str:
    return f"{n / MIB:.2f} MiB" if n < 1 << 30 else f"{n / (1 << 30):.2f} GiB"


def report_lines(p: Plan) -> list[str]:
    ok = {True: "fits", False: "DOES NOT FIT"}
    lines = [
        f"plan {p.image} on {p.board}, context {p.n_ctx} tokens"
        + (" (clamped to the model's seq_len)" if p.ctx_clamped else ""),
        f"  flash: image {_size(p.image_bytes)} in a {_size(p.slot_bytes)} A/B slot: {ok[p.fits_flash]}",
        f"  ram:   {_size(p.ram_needed)} of {_size(p.ram_bytes)}: {ok[p.fits_ram]}"
        f" (weights stay in flash, used in place)",
    ]
    lines += [f"         {name:15} {_size(n)}" for name, n in p.ram_parts.items()]
    spare = p.ram_bytes - p.ram_needed
    if p.fits_ram and p.weight_bytes_per_token > spare:
        lines.append(f"  note: the {_size(p.weight_bytes_per_token)} of weights read per token exceed the "
                     f"{_size(spare)} of spare RAM, so a Linux board cannot keep them in its page cache: "
                     "decode then runs at the flash read speed, not the DRAM roofline below")
    lines += [
        f"  model: {p.params / 1e6:.3f} M params per token, {_size(p.weight_bytes_per_token)} of weights read per token",
        f"  decode  ~{p.decode_tps:.1f} tokens/s on the CPU ({p.decode_bound}-bound roofline; "
        f"{p.decode_tps_full_ctx:.1f} at a full context)",
        f"  prefill ~{p.prefill_tps_cpu:.1f} tokens/s on the CPU (batches of {CPU_PREFILL_BATCH})",
    ]
    if p.npu:
        n = p.npu
        lines.append(f"  prefill ~{n['prefill_tps']:.1f} tokens/s on the NPU ({n['kind']}, {n['dtype']} "
                     f"{n['tops']:g} TOPS, chunks of {n['chunk_tokens']}, {n['bound']}-bound): "
                     f"{n['speedup']:.1f}x the CPU")
        lines.append(f"  decode  ~{n['decode_tps']:.1f} tokens/s on the NPU ({n['decode_bound']}-bound; "
                     "elk decodes on the CPU)")
        if n.get("elk", {}).get("line"):
            lines.append(n["elk"]["line"])
    else:
        lines.append("  npu: none on this board")
    return lines


def check_fits(p: Plan) -> None:
    """Raise PlanError saying by how much the model misses flash and/or RAM."""
    problems = []
    if not p.fits_flash:
        problems.append(f"image {_size(p.image_bytes)} exceeds the {_size(p.slot_bytes)} flash slot "
                        f"by {_size(p.image_bytes - p.slot_bytes)}")
    if not p.fits_ram:
        problems.append(f"needs {_size(p.ram_needed)} of RAM, the board has {_size(p.ram_bytes)} "
                        f"(short by {_size(p.ram_needed - p.ram_bytes)})")
    if problems:
        raise PlanError(f"model does not fit {p.board}: " + "; ".join(problems))
