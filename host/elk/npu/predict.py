"""Predicted prefill speed of elk's own NPU path on a board, for `elk plan`: the block linears of each
chunk on the NPU in int8 (the sim backend's cost model: compute at TOPS x efficiency plus the weight
stream over the NPU's DMA), the output layer on the CPU for the last token; attention, norms and
activations are not counted. An estimate from board
facts, not a measurement (`elk run --npu sim` reports the simulated time of a real run)."""

from __future__ import annotations

from elk import spec
from elk.npu.offload import board_npu
from elk.npu.section import NpuSectionError, parse_section

PROMPT_TOKENS = 128  # the prompt length the prediction is made for


def offload_prediction(img, board, cpu_prefill_tps: float) -> dict:
    """{"section", "chunk", "offloaded", "prefill_tps", "speedup", "line"} for an elk.image.Image."""
    bn = board_npu(board.name)
    if bn is None:
        return {}
    cfg = img.config
    chunk, section = bn.chunk, "absent"
    if img.npu is not None:
        try:
            chunk, section = parse_section(img.npu).chunk, "present"
        except NpuSectionError:
            section = "malformed"
    npu_params = sum(t.rows * t.cols for t in img.tensors.values() if t.role in spec.NPU_ROLES)
    cpu_params = cfg.vocab_size * cfg.dim  # the output layer (tied or not) stays on the CPU
    n_chunks = -(-PROMPT_TOKENS // chunk)
    # per chunk: the sim's cost model over all block linears (weights streamed once per chunk)
    layers = [t for t in img.tensors.values() if t.role in spec.NPU_ROLES]
    npu_s = n_chunks * sum(2.0 * chunk * t.rows * t.cols / (bn.tops * 1e12)
                           + (t.rows * t.cols + 4 * t.rows + chunk * (t.rows + t.cols)) / (bn.dma_gbs * 1e9)
                           for t in layers)
    cpu_s = 2.0 * cpu_params / (board.cpu_gops * 1e9)  # logits of the last prompt token
    tps = PROMPT_TOKENS / (npu_s + cpu_s)
    frac = PROMPT_TOKENS * npu_params / max(PROMPT_TOKENS * npu_params + cpu_params, 1)
    line = (f"  elk NPU path: section {section}; a {PROMPT_TOKENS}-token prompt: {100 * frac:.0f}% of its multiply-adds "
            f"int8 on the NPU in chunks of {chunk}, the output layer on the CPU: ~{tps:.1f} tokens/s "
            f"({tps / cpu_prefill_tps:.1f}x the CPU; attention and norms not counted)"
            if cpu_prefill_tps else "")
    if section != "present":
        line += "; add the section with `elk pack ... --npu` or `--board`"
    return {"section": section, "chunk": chunk, "offloaded": frac, "prefill_tps": tps,
            "speedup": tps / cpu_prefill_tps if cpu_prefill_tps else 0.0, "line": line}
