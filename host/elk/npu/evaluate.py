"""How close NPU prefill stays to the CPU float path: the same prompts through the reference decoder
twice, once with every block linear of a prefill batch sent through an NPU session (sim or LiteRT,
via the C runner), once in float. Reports top-1 agreement, KL divergence, the first generated token
and the runner's chunk/fallback counts. Not a speed measurement (see `elk bench`, `elk run --npu`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from elk import spec
from elk.npu.native import Session
from elk.npu.section import parse_section, tflite_disagreements


@dataclasses.dataclass
class Agreement:
    positions: int
    top1: float  # fraction of positions whose argmax matches the float path
    kl: float  # mean KL(p_float || p_npu), nats
    max_abs: float  # largest |logit difference|
    first_token: list  # per prompt: (float argmax, npu argmax) at the last prompt position
    first_gap: list  # per prompt: float logit of the float argmax minus float logit of the npu argmax
    stats: dict

    def lines(self) -> list:
        agree = sum(a == b for a, b in self.first_token)
        ties = [f"{g:.3f}" for (a, b), g in zip(self.first_token, self.first_gap) if a != b]
        return [f"positions {self.positions}: top-1 agreement {100 * self.top1:.1f}%, mean KL {self.kl:.3g} nats, "
                f"max |dlogit| {self.max_abs:.3g}",
                f"first generated token agrees on {agree}/{len(self.first_token)} prompts"
                + (f" (float logit gap where not: {', '.join(ties)})" if ties else ""),
                f"npu chunks {self.stats['chunks']}, cpu fallbacks {self.stats['cpu_fallbacks']}"
                + (f", simulated npu time {1e3 * self.stats['npu_seconds']:.3f} ms"
                   if self.stats["npu_seconds"] > 0 else "")]  # only a backend with a cost model has one


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def npu_reference(source, session: Session):
    """A reference decoder whose block linears go through `session` (CPU when it hands a call back)."""
    from elk.reference import Reference

    ref = Reference(source)
    for (role, layer), lin in list(ref.lin.items()):
        if role not in spec.NPU_ROLES:
            continue

        def call(x, lin=lin, role=role, layer=layer):
            x = np.asarray(x, dtype=np.float32).reshape(-1, lin.shape[1])
            y = session.linear(role, layer, x, lin.shape[0])
            return lin(x) if y is None else y
        ref.lin[(role, layer)] = call
    return ref


def compare(source, section: bytes, prompts, backend: str = "sim", *,
            decline_odd: bool = False, fail_after: int = 0, tops: float = 0.0, dma_gbs: float = 0.0) -> Agreement:
    """Logits of every prompt (token id lists) on the float path vs NPU prefill."""
    from elk.reference import Reference

    parse_section(section)  # a clear error for a bad section before the C side sees it
    sess = Session(section, backend, decline_odd=decline_odd, fail_after=fail_after, tops=tops, dma_gbs=dma_gbs)
    cpu, npu = Reference(source), npu_reference(source, sess)
    return _agreement([(cpu.logits(ids), npu.logits(ids)) for ids in prompts], sess.stats())


def _agreement(pairs, stats) -> Agreement:
    n = agree = 0
    kl, max_abs, first, gaps = 0.0, 0.0, [], []
    for a, b in pairs:
        la, lb = _log_softmax(a), _log_softmax(b)
        kl += float((np.exp(la) * (la - lb)).sum())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        n += a.shape[0]
        max_abs = max(max_abs, float(np.abs(a - b).max()))
        first.append((int(a[-1].argmax()), int(b[-1].argmax())))
        gaps.append(float(a[-1][first[-1][0]] - a[-1][first[-1][1]]))
    return Agreement(n, agree / max(n, 1), kl / max(n, 1), max_abs, first, gaps, stats)


def compare_runtime(image_path, prompts, backend: str = "sim", board=None, threads: int = 1) -> Agreement:
    """The C runtime's logits for each prompt, CPU only vs NPU prefill through the image's section.
    prompts: token id lists or strings (tokenized with BOS by the runtime)."""
    from elk import runtime
    from elk.npu.offload import attach

    with runtime.Model(image_path, threads=threads) as m:
        ids = [m.tokenize(p) if isinstance(p, str) else list(p) for p in prompts]
        cpu = [m.logits(i) for i in ids]
        sess = attach(m, backend, board, fallback=False)
        npu = [m.logits(i) for i in ids]
        return _agreement(list(zip(cpu, npu)), sess.stats())


@dataclasses.dataclass
class LayerCheck:
    name: str
    sim_vs_numpy: int  # max |int8 difference|: C sim vs elk.npu.intmath (must be 0)
    sim_vs_litert_c: int  # C sim vs the C LiteRT backend (libLiteRt.so through the runtime)
    sim_vs_litert_py: int  # C sim vs LiteRT's Python Interpreter on the same .tflite bytes


def check_backends(blob: bytes, seed: int = 0, litert: bool = True) -> list:
    """Every exported layer on one random int8 chunk through the sim backend, the numpy reference
    arithmetic, the LiteRT backend and LiteRT's Python interpreter; max int8 differences per layer."""
    from elk.npu import intmath
    from elk.npu.litert import run_tflite

    sec = parse_section(blob)
    sim = Session(blob, "sim")
    lrt = Session(blob, "litert") if litert else None
    rng = np.random.default_rng(seed)
    out = []
    for i, L in enumerate(sec.layers):
        x = rng.integers(-128, 128, (sec.chunk, L.cols)).astype(np.int8)
        ys = sim.run_chunk(i, x, L.rows).astype(np.int32)
        yn = intmath.fully_connected_int8(x, L.weights, L.bias, L.in_zp, L.multiplier, L.shift, L.out_zp)
        d_lc = d_lp = -1
        if litert:
            d_lc = int(np.abs(ys - lrt.run_chunk(i, x, L.rows)).max())
            d_lp = int(np.abs(ys - run_tflite(L.tflite, x)).max())
        out.append(LayerCheck(f"blk.{L.layer}.{L.role.lower()}", int(np.abs(ys - yn).max()), d_lc, d_lp))
    return out



def check_report(blob: bytes, seed: int = 0, litert: bool = True) -> tuple:
    """`elk npu check`: (lines, ok). The .tflite/entry disagreements, then one row per layer of
    check_backends and a summary. ok: the sim equals numpy exactly, LiteRT is within 1 int8 step
    (-1 when not run) and every .tflite describes its entry (or was not checked)."""
    odd = tflite_disagreements(parse_section(blob))
    rows = check_backends(blob, seed=seed, litert=litert)
    lines = list(odd)
    lines.append(f"{'layer':<22} {'sim-numpy':>9} {'sim-litert(C)':>13} {'sim-litert(py)':>14}")
    for r in rows:
        lines.append(f"{r.name:<22} {r.sim_vs_numpy:>9} {r.sim_vs_litert_c:>13} {r.sim_vs_litert_py:>14}")
    worst = max(max(r.sim_vs_numpy, r.sim_vs_litert_c, r.sim_vs_litert_py) for r in rows)
    exact = all(r.sim_vs_numpy == 0 for r in rows)
    lines.append(f"{len(rows)} layers: largest int8 difference {worst}; sim equals numpy: {'yes' if exact else 'NO'}")
    return lines, exact and worst <= 1 and not [s for s in odd if not s.startswith("not checked")]


@dataclasses.dataclass
class PrefillTiming:
    n_tokens: int
    cpu_s: float  # measured: prefill of n_tokens on this machine's CPU path (median)
    npu_s: float  # simulated: the offloaded linears on the board's NPU (sim cost model)
    chunks: int
    offloaded: float  # fraction of the prefill multiply-adds the NPU section covers
    board: str

    def lines(self) -> list:
        return [f"prefill {self.n_tokens} tokens on this machine's CPU (measured, median): {1e3 * self.cpu_s:.2f} ms",
                f"the same prefill's block linears ({100 * self.offloaded:.1f}% of its multiply-adds) on the "
                f"{self.board} NPU (simulated, {self.chunks} chunks): {1e3 * self.npu_s:.3f} ms",
                f"(different machines: for the board's CPU see `elk plan IMAGE --board {self.board}`)"]


def time_prefill(image_path, board: str, n_tokens: int = 64, reps: int = 3, threads=None) -> PrefillTiming:
    """Measured CPU prefill of n_tokens next to the sim's simulated NPU time for the same prefill."""
    from elk import runtime
    from elk.npu.offload import attach, board_npu, section_of

    if board_npu(board) is None:
        from elk.npu.offload import NpuOptionError

        raise NpuOptionError(f"board '{board}' has no NPU")
    with runtime.Model(image_path, threads=threads) as m:
        n = min(int(n_tokens), m.config.n_ctx)
        ids = [m.config.bos_id] + [int(i) % m.config.vocab_size for i in range(100, 100 + n - 1)]
        times = []
        # prefill as generation does it (logits of the last token only); max_tokens=0: prefill only, so
        # a prompt as long as the context is timed too (a generated token would need one more position)
        for _ in range(max(1, reps)):
            list(m.generate_tokens(ids, max_tokens=0, temperature=0.0))
            times.append(m.stats.prefill_s)
        sess = attach(m, "sim", board)
        list(m.generate_tokens(ids, max_tokens=0, temperature=0.0))
        st = sess.stats()
        cfg = m.config
    sec = parse_section(section_of(image_path))
    npu_macs = n * sum(L.rows * L.cols for L in sec.layers)
    frac = npu_macs / (npu_macs + cfg.vocab_size * cfg.dim)  # the output layer runs for one token
    return PrefillTiming(n, float(np.median(times)), st["npu_seconds"], st["chunks"], frac, board)
