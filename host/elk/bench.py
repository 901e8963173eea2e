"""`elk bench`: how fast an image runs on this machine through the C runtime, and how close decode
gets to the memory-bandwidth ceiling.

Measures, like llama-bench: prefill of `n_prompt` tokens (one forward call, batched) and decode of
`n_gen` tokens (one forward call each, greedy argmax, no sampler), over `reps` repetitions (median
reported). Also: time to first token (prefill + argmax), image open time, peak RSS, the weight bytes
one decode step reads, and the machine's read bandwidth from elk's own multithreaded C probe
(elk_pool_probe_bandwidth), run in a child process so its buffer does not count in our RSS.
Not here: asserting any speed (tests only check the fields are sane).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

from elk import image as im
from elk import runtime
from elk.errors import ElkError

PROBE_CDEF = """
typedef struct elk_pool elk_pool;
int elk_pool_create(elk_pool **out, int n_threads);
void elk_pool_destroy(elk_pool *pool);
double elk_pool_probe_bandwidth(elk_pool *pool, uint64_t bytes, int reps);
"""
PROBE_BYTES = 512 << 20  # 16x the 32 MiB L3 here: the probe reads DRAM, not cache
HUGE_PAGES_MATTER = 64 << 20  # weights per token below which 2 MiB pages make no difference worth a note
HUGE_PAGES_WANTED = 90  # % of the mapping on 2 MiB pages below which `elk bench` notes it (~1% per 5 points here)


class BenchError(ElkError):
    pass


@dataclasses.dataclass
class BenchResult:
    model: str
    kernels: str
    threads: int
    n_prompt: int
    n_gen: int
    reps: int
    prefill_tok_s: float
    decode_tok_s: float
    ttft_ms: float
    open_ms: float
    weight_bytes_per_token: int
    decode_gb_s: float
    machine_gb_s: float       # best probe of any thread count
    probe_gb_s: float         # median probe, the same thread count as the bench (probe_runs)
    bandwidth_pct: float      # decode_gb_s / machine_gb_s
    bandwidth_pct_same_threads: float  # median over reps of each rep's GB/s / its neighbouring probes' mean
    prefill_cpu_ms: float     # CPU time (all threads) per prompt token
    decode_cpu_ms: float      # CPU time (all threads, incl. spinning) per decoded token: steadier than
                              # wall time on a loaded machine; ~1000/decode_tok_s x threads when idle
    peak_rss_mb: float
    baseline_rss_mb: float    # Python + numpy + libelk before the image is opened
    load_avg: float           # 1-minute load average at the end (the machine is shared)
    prefill_runs: list
    decode_runs: list
    probe_runs: list = dataclasses.field(default_factory=list)  # same-thread probe before rep 1 and after each
    huge_pages_pct: float = float("nan")  # share of the mapped image on 2 MiB pages (Linux smaps)

    def lines(self) -> list:
        return [
            f"model {self.model}: kernels {self.kernels}, {self.threads} thread(s), load avg {self.load_avg:.2f}",
            f"open        {self.open_ms:8.2f} ms",
            f"prefill     {self.prefill_tok_s:8.1f} tokens/s ({self.n_prompt} tokens, median of {self.reps})",
            f"first token {self.ttft_ms:8.1f} ms",
            f"decode      {self.decode_tok_s:8.2f} tokens/s ({self.n_gen} tokens, median of {self.reps})",
            f"bandwidth   {self.decode_gb_s:8.2f} GB/s of weights ({self.weight_bytes_per_token / 1e6:.1f} MB/token)"
            + ("; not probed" if math.isnan(self.machine_gb_s) else
               f" = {self.bandwidth_pct:.0f}% of the machine's {self.machine_gb_s:.1f} GB/s "
               f"({self.bandwidth_pct_same_threads:.0f}% of the {self.threads}-thread probe run around each "
               f"repetition, median {self.probe_gb_s:.1f} GB/s)"),
            f"CPU time    {self.prefill_cpu_ms:8.2f} ms/prompt token, {self.decode_cpu_ms:.2f} ms/decoded token "
            "(all threads; steadier than wall time on a busy machine)",
            f"peak RSS    {self.peak_rss_mb:8.1f} MB ({self.baseline_rss_mb:.1f} MB before opening the image)",
        ] + ([] if math.isnan(self.huge_pages_pct) or self.huge_pages_pct >= HUGE_PAGES_WANTED or
             self.weight_bytes_per_token < HUGE_PAGES_MATTER else [
            f"note        only {self.huge_pages_pct:.0f}% of the image is mapped on 2 MiB pages: its page cache "
            "is partly in small pages (a copy, a download, or memory pressure that split it): decode may be a "
            f"few % slower; `dd if={shlex.quote(self.model)} iflag=nocache count=0; cat {shlex.quote(self.model)} "
            ">/dev/null` reads it "
            "back in 2 MiB pages (docs/performance.md, huge pages)"])

    def to_json(self) -> str:
        """One JSON object; figures not measured (--no-probe) are null, not NaN."""
        d = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(self).items()}
        return json.dumps(d, sort_keys=True)


def huge_pages_pct(path) -> float:
    """Percent of this process's mapping of `path` that the kernel maps with 2 MiB pages (smaps
    FilePmdMapped / Rss), NaN where there is no /proc/self/smaps or no such mapping. Weights on
    2 MiB pages take a TLB entry per 2 MiB: decode streams them a few % faster (docs/performance.md)."""
    target = os.path.realpath(path)
    rss = pmd = 0
    inside = False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(None, 5)
                if head and "-" in head[0] and not head[0].endswith(":"):
                    inside = len(head) == 6 and head[5].rstrip("\n") == target
                elif inside and head[0] == "Rss:":
                    rss += int(head[1])
                elif inside and head[0] == "FilePmdMapped:":
                    pmd += int(head[1])
    except OSError:
        return float("nan")
    return 100.0 * pmd / rss if rss else float("nan")


def weight_bytes_per_token(path) -> int:
    """Bytes of weights one decode step reads: every tensor once, but only one row of the token
    embedding (unless it is also the output matrix)."""
    img = im.read_image(path)
    total = 0
    tied = "output.weight" not in img.tensors
    for t in img.tensors.values():
        if t.role == "TOK_EMBD" and not tied:
            total += t.size // max(t.rows, 1)
        else:
            total += t.size
    return total


def probe_bandwidth(threads: int, nbytes: int = PROBE_BYTES, reps: int = 5) -> float:
    """GB/s read by `threads` threads (in this process: call from a child, see probe_in_child)."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(PROBE_CDEF)
    runtime.library()  # builds libelk when missing
    lib = ffi.dlopen(str(runtime.library_path()))
    pool = ffi.new("elk_pool **")
    rc = lib.elk_pool_create(pool, threads)
    if rc:
        raise BenchError(f"cannot start {threads} threads for the bandwidth probe")
    try:
        gbs = lib.elk_pool_probe_bandwidth(pool[0], nbytes, reps)
    finally:
        lib.elk_pool_destroy(pool[0])
    if gbs <= 0:
        raise BenchError(f"bandwidth probe failed ({gbs:.0f})")
    return gbs


def probe_in_child(threads: int) -> float:
    """Run the probe in a child process so its buffer never shows in this process's peak RSS."""
    code = f"from elk import bench; print(bench.probe_bandwidth({int(threads)}))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise BenchError("bandwidth probe failed: " + (p.stderr.strip().splitlines() or ["?"])[-1])
    return float(p.stdout.strip())


def cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Runner:
    """Forward calls on one open model through libelk's host API (elk_host_forward)."""

    def __init__(self, model):
        self.m = model
        self.ffi, self.lib = runtime.library()
        self.vocab = model.config.vocab_size
        self.logits = np.empty(self.vocab, dtype=np.float32)
        self.c_logits = self.ffi.from_buffer("float[]", self.logits)

    def forward(self, ids: np.ndarray, pos: int) -> int:
        """Run ids at pos..; return the argmax of the last position's logits."""
        rc = self.lib.elk_host_forward(self.m._handle(), self.ffi.from_buffer("int32_t[]", ids), ids.size, pos,
                                       self.c_logits, 0)
        if rc:
            self.m._fail(rc)
        return int(self.logits.argmax())


def run(path, *, threads=None, n_prompt: int = 64, n_gen: int = 32, reps: int = 3, kernels=None,
        probe: bool = True, seed: int = 1) -> BenchResult:
    """Benchmark the image at `path`; see the module docstring for what each figure means."""
    if n_prompt < 1 or n_gen < 1 or reps < 1:
        raise BenchError("--prompt, --gen and --reps must be at least 1")
    if not os.path.isfile(path):
        raise BenchError(f"{path}: " + ("a directory, not an image file" if os.path.isdir(path) else "no such file"))
    runtime.library()
    base_rss = rss_mb()
    bytes_per_token = weight_bytes_per_token(path)
    t0 = time.perf_counter()
    model = runtime.Model(path, n_ctx=None, threads=threads, kernels=kernels)
    open_ms = (time.perf_counter() - t0) * 1e3
    try:
        cfg = model.config
        if n_prompt + n_gen > cfg.n_ctx:
            raise BenchError(f"--prompt {n_prompt} + --gen {n_gen} exceeds the context of {cfg.n_ctx} tokens")
        rng = np.random.default_rng(seed)
        prompt = rng.integers(3, cfg.vocab_size, size=n_prompt).astype(np.int32)  # llama-bench also uses random ids
        prompt[0] = cfg.bos_id
        probe_same = (lambda: probe_in_child(cfg.n_threads)) if probe else None
        runs = _measure(_Runner(model), prompt, n_gen, reps, probe_same)
        huge = huge_pages_pct(path)
        threads_used = cfg.n_threads
        kname = cfg.kernels
    finally:
        model.close()
    peak = rss_mb()
    same, machine, same_pct = float("nan"), float("nan"), float("nan")
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    gbs = bytes_per_token * med["decode"] / 1e9
    if probe:  # the machine's figure is the best any thread count reaches (1 thread may win on a busy host)
        others = [probe_in_child(n) for n in sorted({1, os.cpu_count() or 1} - {threads_used})]
        same, machine = med["probe"], max(runs["probe"] + others)
        same_pct = same_thread_pct(bytes_per_token, runs["decode"], runs["probe"])
    return BenchResult(
        model=str(path), kernels=kname, threads=threads_used, n_prompt=n_prompt, n_gen=n_gen, reps=reps,
        prefill_tok_s=med["prefill"], decode_tok_s=med["decode"], ttft_ms=med["ttft"], open_ms=open_ms,
        weight_bytes_per_token=bytes_per_token, decode_gb_s=gbs, machine_gb_s=machine, probe_gb_s=same,
        bandwidth_pct=100.0 * gbs / machine, bandwidth_pct_same_threads=same_pct,
        prefill_cpu_ms=med["prefill_cpu"], decode_cpu_ms=med["decode_cpu"], peak_rss_mb=peak,
        baseline_rss_mb=base_rss, load_avg=os.getloadavg()[0],
        prefill_runs=[round(x, 2) for x in runs["prefill"]], decode_runs=[round(x, 2) for x in runs["decode"]],
        probe_runs=[round(x, 2) for x in runs["probe"]], huge_pages_pct=huge)


def _measure(r: _Runner, prompt: np.ndarray, n_gen: int, reps: int, probe=None) -> dict:
    """Per repetition: prefill tok/s, TTFT ms, decode tok/s and CPU ms per token of each; with
    `probe` (a function returning GB/s), the probe before the first repetition and after each."""
    n_prompt = prompt.size
    runs = {k: [] for k in ("prefill", "ttft", "decode", "prefill_cpu", "decode_cpu", "probe")}
    r.forward(prompt, 0)  # warm-up, untimed: faults the mapped weights in, as llama-bench's warm-up run does
    r.forward(prompt[:1], n_prompt)
    one = np.empty(1, dtype=np.int32)
    if probe:
        runs["probe"].append(probe())
    for _ in range(reps):
        t, c = time.perf_counter(), cpu_s()
        tok = r.forward(prompt, 0)
        dt = time.perf_counter() - t
        runs["prefill_cpu"].append((cpu_s() - c) * 1e3 / n_prompt)
        runs["prefill"].append(n_prompt / dt)
        runs["ttft"].append(dt * 1e3)
        t, c = time.perf_counter(), cpu_s()
        for i in range(n_gen):
            one[0] = tok
            tok = r.forward(one, n_prompt + i)
        runs["decode"].append(n_gen / (time.perf_counter() - t))
        runs["decode_cpu"].append((cpu_s() - c) * 1e3 / n_gen)
        if probe:
            runs["probe"].append(probe())
    return runs


def same_thread_pct(bytes_per_token: int, decode_runs: list, probe_runs: list) -> float:
    """Median over repetitions of decode GB/s as a percentage of the mean of the probes run right
    before and right after that repetition: the machine's bandwidth moves with its neighbours
    (44-77 GB/s within an hour here), so each repetition is rated against what the machine
    delivered at that time, not at another."""
    pct = [100.0 * bytes_per_token * d / 1e9 / ((probe_runs[i] + probe_runs[i + 1]) / 2)
           for i, d in enumerate(decode_runs)]
    return statistics.median(pct)
