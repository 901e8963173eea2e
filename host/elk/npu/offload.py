"""What the `--npu` options of `elk pack`, `elk run` and the `elk npu` commands do, as library
functions: read a board's NPU facts, pack an image with an NPU section, attach an NPU session to a
runtime model, and describe a section. Not here: arithmetic (intmath), bytes (section, tflite).
"""

from __future__ import annotations

import dataclasses

from elk import spec
from elk.errors import ElkError
from elk.npu.section import NpuSection, NpuSectionError, parse_section

BACKEND_CHOICES = ("sim", "litert", "off")
# --npu-accel: LiteRtHwAccelerators bits (CPU 1, GPU 2, NPU 4); the CPU stays in as LiteRT's fallback
ACCELERATORS = {"cpu": 1, "gpu": 2 | 1, "npu": 4 | 1}


class NpuOptionError(ElkError):
    pass


@dataclasses.dataclass
class BoardNpu:
    board: str
    kind: str
    tops: float  # int8 TOPS x efficiency: what the sim's cost model charges compute at
    dma_gbs: float
    chunk: int


def board_npu(name: str | None) -> BoardNpu | None:
    """The NPU of board `name` (None when it has none or no board is named)."""
    if not name:
        return None
    from elk import boards

    b = boards.load(name)
    npu = b.npu
    if npu.get("kind", "none") == "none":
        return None
    tops = npu.get("tops", {})
    int8 = tops.get("int8", max(tops.values()) if tops else 1.0)
    return BoardNpu(b.name, npu["kind"], float(int8) * float(npu.get("efficiency", 1.0)),
                    float(npu.get("dma_gbs", 4.0)), int(npu.get("prefill_chunk_tokens", spec.NPU_DEFAULT_CHUNK)))


def pack_with_npu(src, out, *, board=None, chunk=None, calib_text=None, outlier_k: float = 4.0,
                  max_outliers=None, quant="f32", recipe=None, tokenizer=None, name=None, security_counter=0,
                  progress=False, notice=None, system_prompt="keep", **options):
    """Read a checkpoint, calibrate it, and write an image with an NPU section (elk pack --npu), block
    by block in bounded memory (elk.npu.stream); returns (PackResult, the section's head and entry
    table as an NpuSection of NpuEntry). A chunk longer than the model's context is clamped to it with
    one `notice` line: every prompt would be padded to the chunk, and no prompt can be longer than the
    context."""
    from elk import image as im
    from elk.convert import load_model
    from elk.convert.pack import ProgressBar
    from elk.npu.section import parse_table
    from elk.npu.stream import section_writer

    bn = board_npu(board)
    n = int(chunk) if chunk is not None else (bn.chunk if bn else spec.NPU_DEFAULT_CHUNK)
    from elk.convert.pack import check_system_prompt, set_system_prompt

    check_system_prompt(system_prompt)
    # elk pack --system-prompt / --no-system-prompt (elk.convert.pack)
    model = set_system_prompt(load_model(src, tokenizer=tokenizer, **options), system_prompt, src)
    n = clamp_chunk(n, model.config.seq_len, "--npu-chunk" if chunk is not None else
                    (f"{bn.board}'s NPU chunk" if bn else "the default NPU chunk"), notice or _stderr_notice)
    table = []
    bar = ProgressBar() if progress else None
    write_npu = section_writer(model, n, text_file=calib_text, outlier_k=outlier_k, max_outliers=max_outliers,
                               done=table.append, progress=bar)  # options and text checked here, no file yet
    result = im.write_image(out, model, quant=quant, recipe=recipe, security_counter=security_counter,
                            name=name, npu=write_npu, progress=bar)
    if bar:
        bar.close()
    return result, parse_table(table[0])


def clamp_chunk(chunk: int, seq_len: int, what: str, notice) -> int:
    """min(chunk, seq_len), saying so in one line when it clamps (pack_with_npu)."""
    if 0 < seq_len < int(chunk):
        notice(f"elk: warning: {what} {chunk} is longer than the model's context (seq_len {seq_len}): using "
               f"{seq_len} (a longer chunk would only pad every prompt)")
        return seq_len
    return int(chunk)


def padding_notice(chunk: int, n_ctx: int, seq_len: int):
    """One line when an image's NPU chunk is longer than the run's context, else None: the chunk is
    baked into the image's int8 layers, so every prefill is padded to it."""
    if chunk <= n_ctx:
        return None
    fix = f"repack with --npu-chunk {n_ctx} or less" + (", or run without --ctx" if chunk <= seq_len else "")
    return (f"npu: the image's NPU chunk is {chunk} tokens, longer than the context of {n_ctx}: every prefill "
            f"is padded to {chunk} tokens ({fix})")


def section_of(image_path) -> bytes:
    """The NPU section bytes of an image, checked; NpuSectionError when absent or malformed."""
    from elk import image as im

    img = im.read_image(image_path)
    if img.npu is None:
        raise NpuSectionError(f"{image_path}: no NPU section (pack it with `elk pack ... --npu`)")
    try:
        parse_section(img.npu)
    except NpuSectionError as e:
        raise NpuSectionError(f"{image_path}: {e}") from None
    return img.npu


def resolve_backend(choice: str | None, board: str | None, image=None, notice=None) -> str:
    """--npu value -> backend name or "off": default off unless the board has an NPU (then sim). With
    `image`, a default sim on an image without an NPU section is "off" with one notice (as the board
    firmware does); an explicit --npu on such an image stays an error (attach raises it)."""
    if choice is None:
        bn = board_npu(board)
        if bn is None:
            return "off"
        if image is not None:
            from elk import image as im

            if im.read_image(image).npu is None:
                (notice or _stderr_notice)(f"npu: {image} has no NPU section (pack it with --npu or --board "
                                           f"{bn.board}); prefill on the CPU")
                return "off"
        return "sim"
    if choice not in BACKEND_CHOICES:
        raise NpuOptionError(f"--npu must be one of {', '.join(BACKEND_CHOICES)}")
    return choice


def _stderr_notice(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def attach(model, backend: str, board: str | None = None, fail_after: int = 0, decline_odd: bool = False,
           accel: str = "cpu", dispatch_dir: str | None = None, fallback: bool = True, notice=_stderr_notice):
    """Route the prefill linears of an elk.runtime.Model through an NPU session; returns the session
    (kept on the model so it outlives every forward call), or None for "off". accel/dispatch_dir:
    where LiteRT places the subgraphs (docs/npu.md, "Plugging in a real NPU").
    When the LiteRT library cannot be loaded (missing, not LiteRT) and `fallback` is set, the model
    stays on the CPU path: one `notice` line, None returned; without `fallback` the error is raised."""
    from elk.npu.native import NpuError, Session, attach_host, load_litert

    if backend == "off":
        if getattr(model, "_npu_session", None) is not None:
            attach_host(model, None)
            model._npu_session = None
        return None
    blob = section_of(model.path)
    bn = board_npu(board)
    if accel not in ACCELERATORS:
        raise NpuOptionError(f"--npu-accel must be one of {', '.join(ACCELERATORS)}")
    if backend == "litert":
        from elk.npu.litert import LiteRtError

        try:
            load_litert()
        except (LiteRtError, NpuError) as e:
            if not fallback:
                raise
            notice(f"npu: litert unavailable ({e}); CPU runs every layer")
            return attach(model, "off")
    chunk = parse_section(blob).chunk
    pad = padding_notice(chunk, model.config.n_ctx, model.config.seq_len)
    if pad:
        notice(pad)
    if bn is not None:
        if chunk != bn.chunk:
            notice(f"npu: image chunk {chunk} tokens, {bn.board} NPU chunk {bn.chunk}: runs the image's "
                   f"(repack with --board {bn.board} for the board's)")
    sess = Session(blob, backend, tops=bn.tops if bn else 0.0, dma_gbs=bn.dma_gbs if bn else 0.0,
                   accelerators=ACCELERATORS[accel], dispatch_dir=dispatch_dir,
                   decline_odd=decline_odd, fail_after=fail_after)
    # what the sim's simulated time is charged at, said beside it (elk run): the board's facts or defaults
    sess.cost_model = (f"{bn.board}: {bn.tops:g} TOPS int8 reached, DMA {bn.dma_gbs:g} GB/s" if bn else
                       "no NPU board named: default 1 TOPS, DMA 4 GB/s; --npu-board sets the board's")
    attach_host(model, sess)
    model._npu_session = sess
    return sess


def describe(blob) -> list:
    """Readable lines about an NPU section (its bytes, checked here, or a parsed NpuSection, e.g.
    section.parse_table's): chunk, layers, quantization, outlier channels."""
    sec = blob if isinstance(blob, NpuSection) else parse_section(blob)
    n_out = sum(L.n_outliers for L in sec.layers)
    macs = sum(L.rows * L.cols for L in sec.layers)
    lines = [f"NPU section v{spec.NPU_VERSION}: {len(sec.layers)} layers, chunk {sec.chunk} tokens, "
             f"{macs / 1e6:.3f} M int8 weights, {n_out} outlier channels (k = {sec.outlier_k:g}), "
             f"calibrated on {sec.calib_tokens} tokens",
             f"{'layer':<22} {'shape':>11} {'in scale/zp':>16} {'out scale/zp':>16} {'outliers':>8} {'tflite':>9}"]
    for L in sec.layers:
        lines.append(f"blk.{L.layer}.{L.role.lower():<16} {f'{L.rows}x{L.cols}':>11} "
                     f"{f'{L.in_scale:.4g}/{L.in_zp}':>16} {f'{L.out_scale:.4g}/{L.out_zp}':>16} "
                     f"{L.n_outliers:>8} {L.tflite_size:>9}")
    return lines


def stats_line(session, gen_stats=None) -> str:
    """One line for `elk run --npu`: chunks offloaded, CPU fallbacks, simulated NPU time next to the
    measured prefill time (which, with the sim backend, includes the sim's own CPU work)."""
    s = session.stats()
    line = (f"npu {session.backend}: {s['chunks']} chunks offloaded, {s['cpu_fallbacks']} prefill linear calls "
            "on the CPU (decode runs there)")
    if session.backend == "sim":
        line += f", simulated NPU time {1e3 * s['npu_seconds']:.3f} ms"
        if getattr(session, "cost_model", None):
            line += f" ({session.cost_model})"
    if gen_stats is not None:
        line += f", measured prefill {1e3 * gen_stats.prefill_s:.1f} ms on this CPU"
        if session.backend == "sim":
            line += " (with the sim's own integer work)"
    notices = session.log.strip()
    return line + ("\n" + notices if notices else "")


def export_tflite(blob: bytes, folder) -> list:
    """Write each layer's .tflite as <folder>/blk.<L>.<role>.tflite; returns the paths."""
    import pathlib

    out = pathlib.Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for L in parse_section(blob).layers:
            path = out / f"blk.{L.layer}.{L.role.lower()}.tflite"
            path.write_bytes(L.tflite)
            paths.append(path)
    except OSError as e:
        raise NpuOptionError(f"{folder}: cannot write ({e.strerror})") from None
    return paths
