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


def test_python_side_prefers_ai_edge_litert_and_falls_back_to_tflite_runtime(monkeypatch):
    """tflite-runtime (frozen at 2.14, numpy<2) cannot be installed beside numpy 2 here; its interpreter
    module is stood in by LiteRT's own Interpreter class, which it shares its API with."""
    import sys
    import types

    from ai_edge_litert.interpreter import Interpreter as LiteRtInterpreter

    from elk.npu import litert

    class TfliteRuntimeInterpreter(LiteRtInterpreter):
        pass

    stand_in = types.ModuleType("tflite_runtime.interpreter")
    stand_in.Interpreter = TfliteRuntimeInterpreter
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", stand_in)
    assert litert._interpreter_class() is LiteRtInterpreter  # both installed: ai-edge-litert wins
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import now fails
    assert litert._interpreter_class() is TfliteRuntimeInterpreter
    w, x, wq, ws, s_in, z_in, s_out, z_out = _layer(seed=5)
    fc = tflite.fully_connected_int8(wq, ws, np.zeros(48, np.int32), 8, s_in, z_in, s_out, z_out)
    xq = intmath.quantize(x, s_in, z_in)
    mult, shift = intmath.channel_multipliers(s_in, ws, s_out)
    ref = intmath.fully_connected_int8(xq, wq, np.zeros(48, np.int32), z_in, mult, shift, z_out)
    assert np.abs(run_tflite(fc.data, xq).astype(int) - ref).max() <= 1
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(litert.LiteRtError, match="neither ai-edge-litert nor tflite-runtime"):
        litert._interpreter_class()


def test_every_exported_layer_reads_back_through_the_tflite_schema_as_an_int8_fc_v4(host_build):
    """Each layer's .tflite, read with LiteRT's generated schema reader (not our parser): one
    FULLY_CONNECTED v4 with x, weight, bias -> y; int8 x/y per-tensor; int8 symmetric per-channel weights
    (zero points 0, quantized_dimension 0, -127..127); int32 bias with scale in_scale x w_scale[c] and zero
    point 0; x and y of the board file's fixed chunk (rk3588: 64); default options (no keep_num_dims)."""
    from ai_edge_litert import schema_py_generated as schema

    from elk.convert import load_model
    from elk.npu.calibrate import build_section
    from elk.npu.offload import board_npu
    from elk.npu.section import pack_section, parse_section

    chunk = board_npu("rk3588").chunk
    assert chunk == 64
    m = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    sec = parse_section(pack_section(build_section(m, chunk=chunk)))
    T = schema.TensorType
    for L in sec.layers:
        data = bytes(L.tflite)
        assert schema.Model.ModelBufferHasIdentifier(data, 0)
        model = schema.Model.GetRootAs(data, 0)
        assert model.Version() == 3 and model.OperatorCodesLength() == 1 and model.SubgraphsLength() == 1
        code = model.OperatorCodes(0)
        assert code.BuiltinCode() == schema.BuiltinOperator.FULLY_CONNECTED and code.Version() == 4
        assert code.DeprecatedBuiltinCode() == schema.BuiltinOperator.FULLY_CONNECTED
        sg = model.Subgraphs(0)
        assert sg.OperatorsLength() == 1
        op = sg.Operators(0)
        assert op.InputsAsNumpy().tolist() == [0, 1, 2] and op.OutputsAsNumpy().tolist() == [3]
        assert sg.InputsAsNumpy().tolist() == [0] and sg.OutputsAsNumpy().tolist() == [3]
        assert op.BuiltinOptionsType() == schema.BuiltinOptions.FullyConnectedOptions
        opts = schema.FullyConnectedOptions()
        opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        assert opts.FusedActivationFunction() == 0 and not opts.KeepNumDims() and opts.WeightsFormat() == 0
        x, w, b, y = (sg.Tensors(i) for i in range(4))
        assert [x.Type(), w.Type(), b.Type(), y.Type()] == [T.INT8, T.INT8, T.INT32, T.INT8]
        assert x.ShapeAsNumpy().tolist() == [chunk, L.cols] and y.ShapeAsNumpy().tolist() == [chunk, L.rows]
        assert w.ShapeAsNumpy().tolist() == [L.rows, L.cols] and b.ShapeAsNumpy().tolist() == [L.rows]
        for t, scale, zp in ((x, L.in_scale, L.in_zp), (y, L.out_scale, L.out_zp)):
            q = t.Quantization()
            assert q.ScaleAsNumpy().tolist() == [np.float32(scale)] and q.ZeroPointAsNumpy().tolist() == [zp]
        wq, bq = w.Quantization(), b.Quantization()
        ws = wq.ScaleAsNumpy()
        assert ws.shape == (L.rows,) and np.all(ws > 0)
        assert wq.QuantizedDimension() == 0 and np.all(wq.ZeroPointAsNumpy() == 0)
        assert bq.QuantizedDimension() == 0 and np.all(bq.ZeroPointAsNumpy() == 0)
        np.testing.assert_allclose(bq.ScaleAsNumpy(), np.float32(L.in_scale) * ws, rtol=1e-6)
        wbuf = model.Buffers(w.Buffer()).DataAsNumpy().view(np.int8)
        bbuf = model.Buffers(b.Buffer()).DataAsNumpy().view("<i4")
        assert wbuf.size == L.rows * L.cols and wbuf.min() >= -127
        assert np.array_equal(wbuf.reshape(L.rows, L.cols), L.weights) and np.array_equal(bbuf, L.bias)
        assert model.Buffers(x.Buffer()).DataLength() == 0 and model.Buffers(y.Buffer()).DataLength() == 0


def test_tinyllama_1b_layer_shapes_export_and_agree_within_one_at_chunk_64(host_build):
    """One block at TinyLlama-1.1B's real shapes (dim 2048, 32/4 heads, SwiGLU 5632: the largest cols any
    exported layer has) with rk3588's 64-token chunk: sim equals numpy and LiteRT is within +-1."""
    from elk import tokenizer as tok
    from elk.convert import Config, Model, Tensor
    from elk.npu.calibrate import build_section
    from elk.npu.evaluate import check_backends
    from elk.npu.section import pack_section, parse_section

    vocab = tok.load(fixture_path("tok512.bin"))
    cfg = Config(dim=2048, hidden_dim=5632, n_layers=1, n_heads=32, n_kv_heads=4, vocab_size=len(vocab.pieces),
                 seq_len=64, rope_theta=10000.0, norm_eps=1e-5)
    rng = np.random.default_rng(0)
    t = {("TOK_EMBD", 0): rng.standard_normal((cfg.vocab_size, 2048)) * 0.5,
         ("ATTN_NORM", 0): np.ones(2048), ("FFN_NORM", 0): np.ones(2048), ("OUTPUT_NORM", 0): np.ones(2048),
         ("OUTPUT", 0): rng.standard_normal((cfg.vocab_size, 2048)) * 0.05}
    for role in ("WQ", "WK", "WV", "WO", "W1", "W2", "W3"):
        rows, cols = cfg.tensor_shape(role)
        t[(role, 0)] = rng.standard_normal((rows, cols)) / np.sqrt(cols)
    m = Model(cfg, {k: Tensor.of(v.astype(np.float32)) for k, v in t.items()}, vocab=vocab, name="tl", source="test")
    blob = pack_section(build_section(m, chunk=64, max_tokens=16))
    sec = parse_section(blob)
    assert sec.chunk == 64
    assert [(L.rows, L.cols) for L in sec.layers] == [(2048, 2048), (256, 2048), (256, 2048), (2048, 2048),
                                                     (5632, 2048), (2048, 5632), (5632, 2048)]
    for r in check_backends(blob, seed=1):
        assert r.sim_vs_numpy == 0 and r.sim_vs_litert_c <= 1 and r.sim_vs_litert_py <= 1, r
