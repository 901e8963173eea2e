"""`elk plan`: fit (flash slot, RAM) and speed predictions for real stories260K images on board files.
Expected numbers are computed here from the model's documented shape (fixtures README), not read back
from the planner."""

import pathlib
import re
import subprocess
import sys

import pytest

from conftest import ROOT, fixture_path, pack_stories260k
from elk import plan

# stories260K: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512, seq_len 512, tied output
DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB, SEQ = 64, 172, 5, 8, 4, 512, 512
HEAD_DIM = DIM // HEADS
PARAMS = LAYERS * (2 * DIM * DIM + 2 * DIM * KV_HEADS * HEAD_DIM + 3 * DIM * HIDDEN) + VOCAB * DIM


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan-images")
    return {q: pack_stories260k(out / f"s-{q}.elk", quant=q) for q in ("f32", "q8_0", "q4_0")}


def tiny_board(tmp_path, flash_mb=1, ram_mb=4096, erase_kb=4):
    """An armv7 board file with little flash: a 1 MiB chip has (1 MiB - 2 x 4 KiB) / 2 = 508 KiB slots."""
    text = (ROOT / "boards" / "qemu-a7.toml").read_text()
    text = text.replace('name = "qemu-a7"', 'name = "tiny"')
    text = re.sub(r"^flash_mb = .*$", f"flash_mb = {flash_mb}", text, flags=re.M)
    text = re.sub(r"^ram_mb = .*$", f"ram_mb = {ram_mb}", text, flags=re.M)
    text = re.sub(r"^erase_block_kb = .*$", f"erase_block_kb = {erase_kb}", text, flags=re.M)
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return str(path)


def elk_plan(*args):
    return subprocess.run([sys.executable, "-m", "elk", "plan", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_plan_counts_params_kv_cache_and_weight_bytes_from_the_image(images):
    p = plan.plan(images["f32"], "rpi5", ctx=100)
    assert p.params == PARAMS
    assert p.ram_parts["kv_cache"] == 2 * LAYERS * 100 * KV_HEADS * HEAD_DIM * 4
    norms = (2 * LAYERS + 1) * DIM * 4
    assert p.weight_bytes_per_token == PARAMS * 4 + norms  # tied output reads the whole embedding
    assert p.decode_tps == pytest.approx(17.1e9 / (PARAMS * 4 + norms))


def test_plan_quantized_images_decode_faster_by_their_size(images):
    tps = {q: plan.plan(images[q], "rpi5").decode_tps for q in images}
    assert tps["q4_0"] > tps["q8_0"] > tps["f32"]
    # q8_0: 34 bytes per 32 weights; ffn_down rows (172 columns, not a multiple of 32) stay F16;
    # norms stay F32. The roofline ratio is the ratio of bytes read per token.
    q8_row = lambda cols: cols // 32 * 34  # noqa: E731
    layer = (DIM * q8_row(DIM) * 2 + KV_HEADS * HEAD_DIM * q8_row(DIM) * 2 + 2 * HIDDEN * q8_row(DIM)
             + DIM * HIDDEN * 2)
    norms = (2 * LAYERS + 1) * DIM * 4
    q8_bytes = LAYERS * layer + VOCAB * q8_row(DIM) + norms
    assert plan.plan(images["q8_0"], "rpi5").weight_bytes_per_token == q8_bytes
    assert tps["q8_0"] / tps["f32"] == pytest.approx((PARAMS * 4 + norms) / q8_bytes)


def test_plan_clamps_context_to_the_models_seq_len(images):
    p = plan.plan(images["q8_0"], "rpi5", ctx=100000)
    assert p.n_ctx == SEQ and p.ctx_clamped
    assert p.ram_parts["kv_cache"] == 2 * LAYERS * SEQ * KV_HEADS * HEAD_DIM * 4


def test_plan_npu_board_predicts_prefill_speedup(images):
    rk = plan.plan(images["q8_0"], "rk3588")
    assert rk.npu["kind"] == "rknpu2" and rk.npu["dtype"] == "int8" and rk.npu["speedup"] > 1
    ax = plan.plan(images["q4_0"], "ax650n")
    assert ax.npu["dtype"] == "int4"  # q4_0 weights use the 72 TOPS int4 rate
    assert plan.plan(images["q8_0"], "rpi5").npu == {}


def test_plan_cli_prints_fit_and_speed(images):
    proc = elk_plan(images["q4_0"], "--board", "rk3588", "--ctx", "256")
    assert proc.returncode == 0, proc.stderr
    assert "flash: image" in proc.stdout and ": fits" in proc.stdout
    assert re.search(r"decode\s+~[\d.]+ tokens/s", proc.stdout)
    assert re.search(r"on the NPU \(rknpu2, int8 6 TOPS", proc.stdout)


def test_plan_refuses_image_larger_than_the_flash_slot(images, tmp_path):
    board = tiny_board(tmp_path)
    proc = elk_plan(images["f32"], "--board", board)  # 1.01 MiB image, 508 KiB slot
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("elk: error: model does not fit tiny: image 1.01 MiB exceeds the 0.50 MiB flash slot by")
    assert "\n" not in err and "Traceback" not in proc.stderr
    assert elk_plan(images["q4_0"], "--board", board).returncode == 0  # 0.23 MiB fits


def test_plan_refuses_when_ram_is_short_and_says_by_how_much(images, tmp_path):
    board = tiny_board(tmp_path, flash_mb=64, ram_mb=2)
    proc = elk_plan(images["q4_0"], "--board", board)
    assert proc.returncode == 2
    m = re.search(r"needs ([\d.]+) MiB of RAM, the board has 2.00 MiB \(short by ([\d.]+) MiB\)", proc.stderr)
    assert m and float(m[1]) - 2.0 == pytest.approx(float(m[2]), abs=0.011)


def test_plan_rejects_bad_inputs_with_one_line(images, tmp_path):
    junk = tmp_path / "junk.elk"
    junk.write_bytes(b"not an image" * 40)
    for args in ((junk, "--board", "rpi5"), (images["q8_0"], "--board", "nope"),
                 (images["q8_0"], "--board", "rpi5", "--ctx", "0")):
        proc = elk_plan(*args)
        assert proc.returncode == 2 and proc.stderr.startswith("elk: error: ")
        assert proc.stderr.count("\n") == 1, proc.stderr


def test_plan_notes_when_weights_cannot_stay_in_the_page_cache(images, tmp_path):
    board = tiny_board(tmp_path, flash_mb=64, ram_mb=5)  # ~4.3 MiB needed, < 1 MiB spare, 1 MiB of f32 weights
    p = plan.plan(images["f32"], board, ctx=64)
    assert p.fits_ram
    assert any("cannot keep them in its page cache" in line for line in plan.report_lines(p))
    roomy = plan.plan(images["f32"], "rpi5", ctx=64)
    assert not any("page cache" in line for line in plan.report_lines(roomy))


def test_plan_decode_is_capped_by_compute_on_a_slow_cpu(images, tmp_path):
    """The roofline has two roofs: with 0.1 GOPS, 2 x params operations per token take longer than
    reading the weights, so decode is compute-bound at cpu_gops / (2 x params)."""
    text = re.sub(r"^cpu_gops = .*$", "cpu_gops = 0.1", (ROOT / "boards" / "rpi5.toml").read_text(), flags=re.M)
    board = tmp_path / "slowcpu.toml"
    board.write_text(text.replace('name = "rpi5"', 'name = "slowcpu"'))
    p = plan.plan(images["q4_0"], str(board))
    assert p.decode_bound == "compute"
    assert p.decode_tps == pytest.approx(0.1e9 / (2 * PARAMS))
    fast = plan.plan(images["q4_0"], "rpi5")
    assert fast.decode_bound == "bandwidth" and fast.decode_tps == pytest.approx(17.1e9 / fast.weight_bytes_per_token)
    assert any("compute-bound roofline" in line for line in plan.report_lines(p))


def test_plan_npu_board_predicts_npu_decode_from_its_dma_roofline(images):
    """rk3588 (board file: 6 TOPS int8, 20% efficiency, 20 GB/s DMA): decode on the NPU streams every
    weight per token over the DMA; elk's own decode stays on the CPU."""
    p = plan.plan(images["q8_0"], "rk3588")
    expect = min(20e9 / p.weight_bytes_per_token, 6e12 * 0.2 / (2 * PARAMS))
    assert p.npu["decode_tps"] == pytest.approx(expect)
    assert p.npu["decode_bound"] == "dma"
    assert any("tokens/s on the NPU (dma-bound; elk decodes on the CPU)" in line for line in plan.report_lines(p))


def c_arena_bytes(lib, path, n_ctx: int) -> dict:
    """What the C runtime itself asks for (the firmware takes exactly these from board RAM, main/gen.c):
    model arena (KV cache + activations + structs), tokenizer arena, sampler + token ids + decode loop."""
    import ctypes

    from elk import image

    data = pathlib.Path(path).read_bytes()
    buf = ctypes.create_string_buffer(data, len(data))
    img = ctypes.create_string_buffer(1 << 16)  # holds an elk_image (under 1 KiB)
    assert lib.elk_image_open(img, buf, ctypes.c_uint64(len(data))) == 0
    opts = ctypes.create_string_buffer(256)  # elk_model_opts zeroed, then n_ctx (its first field)
    ctypes.memmove(opts, ctypes.byref(ctypes.c_uint32(n_ctx)), 4)
    parsed = image.read_image(path)
    vocab = parsed.config.vocab_size
    up = lambda n: (n + 63) // 64 * 64  # noqa: E731  (gen.c's ram_take aligns every piece to 64)
    return {
        "model": lib.elk_model_arena_size(img, opts),
        "tokenizer": lib.elk_tokenizer_arena_size(ctypes.c_char_p(parsed.tokenizer), ctypes.c_uint64(len(parsed.tokenizer))),
        "rest": up(lib.elk_sampler_arena_size(ctypes.c_uint32(vocab))) + up(4 * n_ctx) + up(4 * n_ctx + 4 * vocab + 64),
    }


def test_plan_ram_parts_cover_what_the_c_runtime_allocates(images, host_build, tmp_path):
    """Each RAM part of the plan is at least what the C runtime's own arena-size functions return (and
    not more than 25% + 16 KiB above), for stories260K (vocab 512) and a stories15M-shaped image with
    Llama 2's 32,000-piece vocabulary, at two context lengths each."""
    import ctypes

    big = tmp_path / "s15.elk"
    proc = subprocess.run([sys.executable, "-m", "elk.models.synth", "stories15m", "--vocab",
                           str(fixture_path("tokenizer.model")), "-o", str(big), "--quant", "q4_0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(host_build / "libelk.so"))
    for f in ("elk_model_arena_size", "elk_tokenizer_arena_size", "elk_sampler_arena_size"):
        getattr(lib, f).restype = ctypes.c_uint64
    for path, ctx in ((images["q4_0"], 512), (images["q4_0"], 64), (big, 256), (big, 16)):
        c = c_arena_bytes(lib, path, ctx)
        parts = plan.plan(path, "rpi5", ctx=ctx).ram_parts
        planned = {"model": parts["kv_cache"] + parts["activations"], "tokenizer": parts["tokenizer"],
                   "rest": parts["sampler_tokens"]}
        for part, need in c.items():
            assert need > 0
            assert need <= planned[part] <= need * 1.25 + 16384, (path.name, ctx, part, need, planned[part])


def test_plan_counts_the_npu_runner_arena_on_a_board_with_an_npu(host_build, tmp_path):
    """An image with an NPU section on rk3588: the firmware also takes the NPU runner's scratch from
    board RAM; the plan's part covers libelk's elk_npu_runner_arena_size. No NPU, no part."""
    import ctypes

    from elk import image

    img = tmp_path / "s-npu.elk"
    proc = subprocess.run(
        [sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "--tokenizer",
         str(fixture_path("tok512.bin")), "--quant", "q8_0", "--board", "rk3588", "-o", str(img), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(host_build / "libelk.so"))
    lib.elk_npu_runner_arena_size.restype = ctypes.c_uint64
    sec = image.read_image(img).npu
    need = lib.elk_npu_runner_arena_size(ctypes.c_char_p(sec), ctypes.c_uint64(len(sec)))
    assert need == 64 * (HIDDEN + HIDDEN) + 64  # chunk 64 x (widest rows + widest cols: ffn 172) + 64
    part = plan.plan(img, "rk3588").ram_parts["npu_scratch"]
    assert need <= part <= need + 128
    assert "npu_scratch" not in plan.plan(img, "rpi5").ram_parts
