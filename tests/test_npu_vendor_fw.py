"""A vendor NPU backend inside the board firmware, done the way docs/npu.md ("Plugging in a real NPU") tells
a vendor: the example backend of tests/c/npu_vendor.c ("acme": float requantization, declines layers
wider than 128 outputs, a 4-TOPS cost model) is compiled into elk-fw and registered at the top of
board_main.c's main (a copy here, with that one line added), and the board declares npu.kind "acme".
Over a real pty the image is flashed and the prompt's prefill runs on acme: INFO names it, STATS carries
acme's chunk count and its own device time, its declines are logged one line each, and the greedy text
equals the CPU-only board's and the sim board's over the tokens docs/npu.md asserts for the sim.
The same flags on the stock elk-fw (acme not registered) run the built-in sim, as documented."""

import subprocess
import sys

import pytest
from conftest import ROOT, fixture_path

from elk import chat
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect
from elk.npu.section import parse_section

PROMPT = "Once upon a time"
SAME_TOKENS = 16  # as tests/test_emulate_npu.py: what the int8 prefill noise cannot move on this prompt
NPU_FLAGS = ["--npu-kind", "acme", "--npu-tops", "6", "--npu-efficiency", "0.2", "--npu-dma-gbs", "20",
             "--npu-chunk", "32"]
REGISTER_AT = "int main(int argc, char **argv)\n{\n"


class AcmeBoard(Emulator):
    """The native host board with an NPU of kind "acme" (elk-fw's board flags) on a given elk-fw."""

    def __init__(self, fw, **kw):
        super().__init__("host", **kw)
        self.fw = fw

    def command(self):
        return super().command() + NPU_FLAGS


@pytest.fixture(scope="module")
def acme_fw(host_build, tmp_path_factory):
    """elk-fw of the host build with acme linked in and registered; the rest is the host build's objects."""
    d = tmp_path_factory.mktemp("acme-fw")
    src = (ROOT / "firmware" / "platform" / "posix" / "board_main.c").read_text()
    assert src.count(REGISTER_AT) == 1, "board_main.c's main changed: update where the vendor registers"
    src = src.replace(REGISTER_AT, '#include "elk/npu.h"\nextern const elk_npu_backend acme_npu_backend;\n\n'
                      + REGISTER_AT + "    elk_npu_register(&acme_npu_backend); /* docs/npu.md: vendor backend */\n")
    (d / "board_main.c").write_text(src)
    cflags = ["-march=native", "-O2", "-std=c11", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror",
              "-Wno-unused-parameter", "-DELK_BOARD_NAME=\"host\"", "-D_FILE_OFFSET_BITS=64",
              "-I", str(ROOT / "firmware" / "include"), "-I", str(ROOT / "firmware" / "src"),
              "-I", str(ROOT / "firmware" / "platform" / "posix")]
    obj = host_build / "obj"
    # elk-fw's objects as firmware/platform/posix/SConscript links them, minus its board_main.o
    objs = sorted(str(p) for p in (obj / "src").rglob("*.o"))
    objs += sorted(str(p) for p in (obj / "platform" / "posix").glob("*.o")
                   if p.name not in ("board_main.o", "elk_run.o"))
    for c_file, out, extra in ((d / "board_main.c", d / "board_main.o", []),
                               (ROOT / "tests" / "c" / "npu_vendor.c", d / "npu_vendor.o", ["-DNPU_VENDOR_NO_MAIN"])):
        r = subprocess.run(["gcc", *cflags, *extra, "-c", str(c_file), "-o", str(out)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
    fw = d / "elk-fw"
    r = subprocess.run(["gcc", "-o", str(fw), str(d / "board_main.o"), str(d / "npu_vendor.o"), *objs,
                        "-lm", "-lpthread", "-ldl", "-lsodium"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return fw


@pytest.fixture(scope="module")
def npu_image(host_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("acme-img") / "npu.elk"
    r = subprocess.run([sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "--tokenizer",
                        str(fixture_path("tok512.bin")), "--npu", "--npu-chunk", "32", "-o", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return out


def _serve(emu_factory, image, tmp_path, name):
    log = tmp_path / f"{name}.log"
    with open(log, "w") as lf, emu_factory(flash=tmp_path / f"{name}.bin", baud=0, log=lf) as emu:
        res = flashing.flash([emu.port], image, progress=False)[0]
        assert res.ok, res.error
        with connect(emu.port, 0) as link:
            info = link.info()
            text = "".join(link.generate(PROMPT, max_tokens=SAME_TOKENS, temperature=0, raw=True, reset=True))
            st = link.last_stats
    return info, text, st, log.read_text()


def _acme_seconds(image, n_prompt):
    """acme's own cost model (npu_vendor.c: 2·chunk·rows·cols / 4e12 per chunk) over the layers it takes."""
    from elk import image as im

    sec = parse_section(im.read_image(image).npu)
    chunks = -(-n_prompt // sec.chunk)
    taken = [L for L in sec.layers if L.rows <= 128]
    return sum(chunks * 2.0 * sec.chunk * L.rows * L.cols / 4e12 for L in taken), chunks * len(taken)


def test_vendor_backend_registered_in_elk_fw_runs_the_board_prefill(acme_fw, npu_image, host_build, tmp_path):
    info, text, st, log = _serve(lambda **kw: AcmeBoard(acme_fw, **kw), npu_image, tmp_path, "acme")
    assert info.npu == "acme" and "npu:acme" in info.caps() and info.npu_note == "", info
    assert "npu: prompt prefill on the acme backend, decode on the CPU" in chat.info_lines(info)
    assert st.prompt_tokens == 5 and st.gen_tokens == SAME_TOKENS
    want_s, want_chunks = _acme_seconds(npu_image, st.prompt_tokens)
    # 5 blocks x 7 linears, w1/w3 (172 outputs) declined: 25 chunks, timed by acme's 4-TOPS model, not
    # by the board's --npu-tops that the sim would use
    assert st.npu_chunks == want_chunks == 25
    assert abs(st.npu_s - want_s) <= 1.5e-6 and st.npu_s > 0  # STATS carries whole microseconds
    declines = sorted(line[line.index("npu: "):] for line in log.splitlines() if "declines" in line)
    assert declines == sorted(
        f"npu: acme declines blk.{b}.{r}; CPU runs it (-8)" for b in range(5) for r in ("ffn_gate", "ffn_up")), log
    # the answer: the CPU-only board's and the sim board's greedy text (docs/npu.md: each layer within one
    # int8 step of the sim's arithmetic, tests/test_npu_vendor.py)
    _, cpu_text, cpu_st, _ = _serve(lambda **kw: Emulator("host", **kw), npu_image, tmp_path, "cpu")
    sinfo, sim_text, sim_st, _ = _serve(lambda **kw: AcmeBoard(host_build / "elk-fw", **kw), npu_image, tmp_path,
                                        "stock")
    assert cpu_st.npu_chunks == 0
    assert sinfo.npu == "sim" and sim_st.npu_chunks == 35  # stock firmware: nothing named acme, the sim runs
    assert text == cpu_text == sim_text and text.startswith(", there was a little girl")
