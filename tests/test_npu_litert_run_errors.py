"""LiteRT errors printed while an NPU chunk runs (not while its layer compiles) reach the user only inside
elk's own one-line notice, as the compile-time ones do (tests/test_npu_litert_log.py): nothing of
LiteRT's on a line of its own. Provoked with a real .tflite from the project's writer whose per-channel
zero points are 3: LiteRT compiles it, then at the first run XNNPACK cannot build its subgraph
("ERROR: Node number 1 (TfLiteXNNPackDelegate) failed to prepare.", "ERROR: [litert_compiled_model.cc:...]
Failed to allocate tensors"), the run fails and the CPU takes that layer. Real LiteRT (the ai-edge-litert
wheel's libLiteRt.so), through `elk run --npu litert` and elk-run, each a fresh process."""

import subprocess

import pytest
from conftest import ROOT, fixture_path, run_elk

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def image(host_build, tmp_path_factory):
    from elk import image as im
    from elk.convert import load_model
    from elk.npu import calibrate, tflite
    from elk.npu.section import pack_section

    m = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    sec = calibrate.build_section(m, chunk=32)
    plain = tflite._quant

    def nonzero_channel_zero_points(b, scales, zero_points, dim=0):
        return plain(b, scales, [3] * len(scales) if len(scales) > 1 else zero_points, dim)

    mp = pytest.MonkeyPatch()
    mp.setattr(tflite, "_quant", nonzero_channel_zero_points)
    try:
        sec.layers[0] = calibrate.build_section(m, chunk=32).layers[0]
    finally:
        mp.undo()
    path = tmp_path_factory.mktemp("litert-run") / "zp.elk"
    im.write_image(path, m, npu=pack_section(sec))
    return path


def _runs(host_build, image):
    from elk.npu.litert import library_path

    cli = run_elk("run", image, "-p", PROMPT, "-n", "4", "--temperature", "0", "--npu", "litert", timeout=60)
    program = subprocess.run([str(host_build / "elk-run"), str(image), "-p", PROMPT, "-n", "4", "--temperature", "0",
                              "--npu", "litert", "--litert-lib", str(library_path())],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    return {"elk run": cli, "elk-run": program}


def test_a_litert_error_during_a_chunk_run_is_part_of_one_elk_notice(image, host_build):
    for who, r in _runs(host_build, image).items():
        assert r.returncode == 0 and r.stdout.startswith(PROMPT) and len(r.stdout) > len(PROMPT) + 2, (who, r)
        err = r.stderr.splitlines()
        # compiled, then failed when run: the run-time path, not a decline at compile time
        assert "declines" not in r.stderr, (who, r.stderr)
        assert any(line.startswith("npu litert: 34 chunks offloaded, 1 prefill") for line in err), (who, r.stderr)
        said = [line for line in err if "Failed to allocate tensors" in line]
        assert len(said) == 1, (who, r.stderr)
        assert said[0].startswith("npu: litert failed on blk.0.attn_q; CPU runs it ("), (who, said[0])
        assert "; LiteRT said: ERROR: Node number 1 (TfLiteXNNPackDelegate) failed to prepare.; ERROR: [" in said[0]
        # nothing of LiteRT's on a line of its own, before or after the fix's notice
        assert not [line for line in err if line.startswith(("ERROR", "INFO", "VERBOSE", "WARNING"))], (who, r.stderr)
