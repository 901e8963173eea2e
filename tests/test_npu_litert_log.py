"""LiteRT's own log lines stay out of the user's terminal: `elk run --npu litert` and elk-run print no
"INFO: Created TensorFlow Lite XNNPACK delegate for CPU." (TFLite's logger, which libLiteRt.so gives no
switch for: npu_host.c filters it while the layers are compiled), yet a real LiteRT error still reaches
the user, in elk's one-line style, joined to the notice of the layer it made fall back to the CPU.
Both through real LiteRT (the ai-edge-litert wheel's libLiteRt.so), in fresh processes: the XNNPACK
line is printed once per process."""

import subprocess

import pytest
from conftest import ROOT, fixture_path, run_elk

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def images(host_build, tmp_path_factory):
    """A stories260K image with an NPU section, and one whose layer 0 .tflite asks for FULLY_CONNECTED
    version 99 (a valid flatbuffer LiteRT refuses to compile: it has no kernel of that version)."""
    from elk import image as im
    from elk.convert import load_model
    from elk.npu import calibrate, tflite
    from elk.npu.section import pack_section

    d = tmp_path_factory.mktemp("litert-log")
    m = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    sec = calibrate.build_section(m, chunk=32)
    im.write_image(d / "good.elk", m, npu=pack_section(sec))
    mp = pytest.MonkeyPatch()
    mp.setattr(tflite, "FC_VERSION", 99)
    try:
        bad_layer = calibrate.build_section(m, chunk=32).layers[0]
    finally:
        mp.undo()
    sec.layers[0] = bad_layer
    im.write_image(d / "bad.elk", m, npu=pack_section(sec))
    return d / "good.elk", d / "bad.elk"


def _elk_run_program(host_build, image):
    from elk.npu.litert import library_path

    return subprocess.run([str(host_build / "elk-run"), str(image), "-p", PROMPT, "-n", "4", "--temperature", "0",
                           "--npu", "litert", "--litert-lib", str(library_path())],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def _runs(host_build, image):
    cli = run_elk("run", image, "-p", PROMPT, "-n", "4", "--temperature", "0", "--npu", "litert", timeout=60)
    return {"elk run": cli, "elk-run": _elk_run_program(host_build, image)}


def test_litert_info_lines_are_not_shown(images, host_build):
    for who, r in _runs(host_build, images[0]).items():
        assert r.returncode == 0, (who, r.stderr)
        assert r.stdout.strip(), who
        err = r.stderr.splitlines()
        assert not [line for line in err if line.startswith(("INFO", "VERBOSE", "WARNING"))], (who, r.stderr)
        assert "XNNPACK" not in r.stderr, who
        # LiteRT did run every layer: the quiet is not LiteRT missing
        assert any(line.startswith("npu litert: 35 chunks offloaded, 0 prefill") for line in err), (who, r.stderr)


def test_litert_error_is_one_elk_line_on_the_declined_layer(images, host_build):
    for who, r in _runs(host_build, images[1]).items():
        assert r.returncode == 0, (who, r.stderr)
        err = r.stderr.splitlines()
        said = [line for line in err if "FULLY_CONNECTED" in line]
        assert len(said) == 1, (who, r.stderr)
        assert said[0].startswith("npu: litert declines blk.0.attn_q; CPU runs it (-8); LiteRT said: ERROR: "
                                  "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '99'"), who
        assert said[0].endswith("; ERROR: Registration failed."), who
        # nothing of LiteRT's on a line of its own, no INFO noise, the other 34 layers still offloaded
        assert not [line for line in err if line.startswith(("ERROR", "INFO", "VERBOSE"))], (who, r.stderr)
        assert "XNNPACK" not in r.stderr, (who, r.stderr)
        assert any(line.startswith("npu litert: 34 chunks offloaded, 1 prefill") for line in err), (who, r.stderr)


def test_npu_check_names_litert_reason_for_a_layer_it_refused(images):
    r = run_elk("npu", "check", images[1], timeout=60)
    assert r.returncode == 2
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("elk: error: npu chunk (entry 0): "), r.stderr
    assert "LiteRT said: ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '99'" in err[0]
