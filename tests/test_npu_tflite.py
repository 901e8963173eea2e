"""The .tflite writer and the NPU backends agree on FULLY_CONNECTED int8: LiteRT's own interpreter
reads what we write (types, per-channel quantization, op version), and on every exported layer of
stories260K the C sim equals the numpy TFLite arithmetic exactly and LiteRT (C API through the
runtime, and the Python Interpreter) is within +-1."""

import numpy as np
import pytest
from conftest import fixture_path

from elk.npu import intmath, tflite
from elk.npu.evaluate import check_backends
from elk.npu.litert import run_tflite


@pytest.fixture(scope="module")
def stories_section(host_build):
    from elk.convert import load_model
    from elk.npu.calibrate import build_section
    from elk.npu.section import pack_section

    m = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    return pack_section(build_section(m, chunk=32))


def _layer(rows=48, cols=64, chunk=8, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    x = (2 * rng.standard_normal((chunk, cols))).astype(np.float32)
    wq, ws = intmath.weight_params(w)
    s_in, z_in = intmath.activation_params(x.min(), x.max())
    y = x @ w.T
    s_out, z_out = intmath.activation_params(y.min(), y.max())
    return w, x, wq, ws, s_in, z_in, s_out, z_out


def test_tflite_writer_output_is_read_by_litert_with_int8_per_channel_fc():
    from ai_edge_litert.interpreter import Interpreter

    w, x, wq, ws, s_in, z_in, s_out, z_out = _layer()
    bias = np.arange(48, dtype=np.int32) - 24
    fc = tflite.fully_connected_int8(wq, ws, bias, 8, s_in, z_in, s_out, z_out)
    assert fc.data[4:8] == b"TFL3"
    it = Interpreter(model_content=fc.data)
    it.allocate_tensors()
    details = {d["name"]: d for d in it.get_tensor_details()}
    assert details["x"]["dtype"] == np.int8 and list(details["x"]["shape"]) == [8, 64]
    assert details["y"]["dtype"] == np.int8 and list(details["y"]["shape"]) == [8, 48]
    wd = details["linear.weight"]
    assert wd["dtype"] == np.int8
    assert np.allclose(wd["quantization_parameters"]["scales"], ws)
    assert wd["quantization_parameters"]["quantized_dimension"] == 0
    assert details["linear.bias"]["dtype"] == np.int32
    # constant bytes recorded by the writer are the ones LiteRT reads
    assert np.array_equal(it.get_tensor(wd["index"]), wq)
    assert np.array_equal(it.get_tensor(details["linear.bias"]["index"]), bias)
    assert it._get_ops_details()[0]["op_name"] == "FULLY_CONNECTED"  # (then XNNPACK's DELEGATE node)
    # LiteRT's generated schema reader agrees: one op code, FULLY_CONNECTED version 4
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(fc.data, 0)
    assert model.OperatorCodesLength() == 1
    assert model.OperatorCodes(0).BuiltinCode() == schema.BuiltinOperator.FULLY_CONNECTED
    assert model.OperatorCodes(0).Version() == 4
    assert model.Subgraphs(0).OperatorsLength() == 1


def test_litert_matches_tflite_int8_arithmetic_within_one():
    w, x, wq, ws, s_in, z_in, s_out, z_out = _layer(seed=3)
    bias = np.zeros(48, np.int32)
    fc = tflite.fully_connected_int8(wq, ws, bias, 8, s_in, z_in, s_out, z_out)
    xq = intmath.quantize(x, s_in, z_in)
    mult, shift = intmath.channel_multipliers(s_in, ws, s_out)
    ref = intmath.fully_connected_int8(xq, wq, bias, z_in, mult, shift, z_out)
    got = run_tflite(fc.data, xq)
    assert np.abs(got.astype(int) - ref).max() <= 1
    # and the integer result approximates the float product to a few output steps
    err = np.abs(intmath.dequantize(ref, s_out, z_out) - x @ w.T).max()
    assert err < 4 * s_out


def test_writer_rejects_bad_shapes_and_scales():
    wq = np.zeros((4, 8), np.int8)
    with pytest.raises(tflite.TfliteError):
        tflite.fully_connected_int8(wq, np.ones(3, np.float32), np.zeros(4, np.int32), 2, 0.1, 0, 0.1, 0)
    with pytest.raises(tflite.TfliteError):
        tflite.fully_connected_int8(wq, np.ones(4, np.float32), np.zeros(4, np.int32), 2, 0.0, 0, 0.1, 0)


def test_requantize_matches_tflite_rounding_on_edge_values():
    # x * 0.5 with gemmlowp's SaturatingRoundingDoublingHighMul: (a*b + nudge) / 2^31 truncated, where
    # nudge = 2^30 for a*b >= 0 and 1 - 2^30 below: +halves round up, -halves toward zero.
    m, s = intmath.quantize_multiplier(0.5)
    assert (m, s) == (1 << 30, 0)
    acc = np.array([1, 3, -1, -3, 5, -5])
    assert [int(v) for v in intmath.requantize(acc, np.full(6, m), np.full(6, s))] == [1, 2, 0, -1, 3, -2]
    # a right shift: RoundingDivideByPOT rounds half away from zero
    m, s = intmath.quantize_multiplier(0.125)  # 0.5 * 2^-2
    assert (m, s) == (1 << 30, -2)
    acc = np.array([4, 12, -12, 20, -20])  # x/8 = 0.5, 1.5, -1.5, 2.5, -2.5
    assert [int(v) for v in intmath.requantize(acc, np.full(5, m), np.full(5, s))] == [1, 2, -2, 3, -3]


def test_every_stories260k_layer_sim_exact_and_litert_within_one(stories_section):
    rows = check_backends(stories_section, seed=7, litert=True)
    assert len(rows) == 5 * 7
    for r in rows:
        assert r.sim_vs_numpy == 0, r
        assert r.sim_vs_litert_c <= 1, r
        assert r.sim_vs_litert_py <= 1, r
