"""`elk plan` on a board with an NPU adds the predicted prefill speed of elk's NPU path (block linears
int8 on the NPU with the sim's cost model, output layer on the CPU) and says whether the image has the
section; boards without an NPU get no such line."""

import pytest
from conftest import fixture_path

from elk import boards, plan


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from elk import image as im
    from elk.convert import load_model
    from elk.npu.calibrate import build_section
    from elk.npu.section import pack_section

    d = tmp_path_factory.mktemp("plan")
    m = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    im.write_image(d / "npu.elk", m, npu=pack_section(build_section(m, chunk=64)))
    im.write_image(d / "plain.elk", m)
    return d / "npu.elk", d / "plain.elk"


def test_plan_predicts_elk_npu_prefill_on_an_npu_board(images):
    with_sec, plain = images
    p = plan.plan(with_sec, "rk3588")
    e = p.npu["elk"]
    assert e["section"] == "present" and e["chunk"] == 64
    b = boards.load("rk3588")
    tops = b.npu["tops"]["int8"] * b.npu["efficiency"]
    shapes = [(64, 64), (32, 64), (32, 64), (64, 64), (172, 64), (64, 172), (172, 64)] * 5
    per_chunk = sum(2.0 * 64 * r * c / (tops * 1e12) + (r * c + 4 * r + 64 * (r + c)) / (b.npu["dma_gbs"] * 1e9)
                    for r, c in shapes)
    t = 2 * per_chunk + 2.0 * 512 * 64 / (b.cpu_gops * 1e9)  # 128 tokens = 2 chunks of 64; output once
    assert e["prefill_tps"] == pytest.approx(128 / t, rel=1e-9)
    npu_params = sum(r * c for r, c in shapes)
    assert e["offloaded"] == pytest.approx(128 * npu_params / (128 * npu_params + 512 * 64))
    assert any(line.startswith("  elk NPU path: section present") for line in plan.report_lines(p))
    q = plan.plan(plain, "rk3588")
    assert q.npu["elk"]["section"] == "absent"
    assert "elk pack ... --npu" in q.npu["elk"]["line"]
    assert not any("elk NPU path" in line for line in plan.report_lines(plan.plan(plain, "host")))
