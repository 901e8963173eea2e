"""Writes a one-operator .tflite model (FULLY_CONNECTED, int8) straight from the TFLite FlatBuffer schema.

No TensorFlow: tables are laid out with the `flatbuffers` Builder using the schema's field slot numbers
(tensorflow/compiler/mlir/lite/schema/schema.fbs). Not a general TFLite writer: one subgraph, one op.
"""

from __future__ import annotations

import dataclasses

import flatbuffers
import numpy as np

from elk.errors import ElkError

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
# schema.fbs enum values
TENSOR_FLOAT32, TENSOR_INT32, TENSOR_INT8 = 0, 2, 9
OP_FULLY_CONNECTED = 9
OPTIONS_FULLY_CONNECTED = 8  # BuiltinOptions union tag of FullyConnectedOptions
QUANT_DETAILS_NONE = 0
# FULLY_CONNECTED version 4: int8 activations with per-channel int8 weights and an int32 bias.
FC_VERSION = 4
BUFFER_ALIGN = 16  # TFLite reads constant buffers in place; keep them 16-byte aligned


class TfliteError(ElkError):
    pass


@dataclasses.dataclass
class FcModel:
    """A built model and where the constant data sits inside its bytes (absolute byte offsets)."""

    data: bytes
    weights_offset: int  # int8 [rows, cols], row-major
    bias_offset: int  # int32 [rows], little-endian


def _vector_i32(b: flatbuffers.Builder, values) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(list(values)):
        b.PrependInt32(int(v))
    return b.EndVector()


def _vector_i64(b: flatbuffers.Builder, values) -> int:
    b.StartVector(8, len(values), 8)
    for v in reversed(list(values)):
        b.PrependInt64(int(v))
    return b.EndVector()


def _vector_f32(b: flatbuffers.Builder, values) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(list(values)):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _vector_offsets(b: flatbuffers.Builder, offsets) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _vector_bytes(b: flatbuffers.Builder, raw: bytes) -> int:
    """A [ubyte] vector whose first data byte is BUFFER_ALIGN-aligned in the finished file."""
    b.StartVector(1, len(raw), BUFFER_ALIGN)
    b.head = b.head - len(raw)
    b.Bytes[b.head : b.head + len(raw)] = raw
    return b.EndVector()


def _quant(b: flatbuffers.Builder, scales, zero_points, dim: int = 0) -> int:
    s = _vector_f32(b, scales)
    z = _vector_i64(b, zero_points)
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(2, s, 0)  # scale
    b.PrependUOffsetTRelativeSlot(3, z, 0)  # zero_point
    b.PrependInt32Slot(6, dim, 0)  # quantized_dimension
    return b.EndObject()


def _tensor(b: flatbuffers.Builder, name: str, shape, ttype: int, buffer: int, quant: int) -> int:
    n = b.CreateString(name)
    sh = _vector_i32(b, shape)
    b.StartObject(11)
    b.PrependUOffsetTRelativeSlot(0, sh, 0)  # shape
    b.PrependInt8Slot(1, ttype, 0)  # type
    b.PrependUint32Slot(2, buffer, 0)  # buffer index (0 = the empty sentinel)
    b.PrependUOffsetTRelativeSlot(3, n, 0)  # name
    b.PrependUOffsetTRelativeSlot(4, quant, 0)  # quantization
    return b.EndObject()


def _buffer(b: flatbuffers.Builder, data_vec: int | None) -> int:
    b.StartObject(3)
    if data_vec is not None:
        b.PrependUOffsetTRelativeSlot(0, data_vec, 0)
    return b.EndObject()


def _tensor_map(b: flatbuffers.Builder, name: str, index: int) -> int:
    n = b.CreateString(name)
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, n, 0)
    b.PrependUint32Slot(1, index, 0)
    return b.EndObject()


def _fc_operator(b: flatbuffers.Builder) -> int:
    """FULLY_CONNECTED(x=0, weight=1, bias=2) -> y=3 with default FullyConnectedOptions."""
    b.StartObject(6)  # FullyConnectedOptions: no fused activation, DEFAULT weights format
    b.PrependInt8Slot(0, 0, 0)
    fc_opts = b.EndObject()
    op_in = _vector_i32(b, [0, 1, 2])
    op_out = _vector_i32(b, [3])
    b.StartObject(14)
    b.PrependUint32Slot(0, 0, 0)  # opcode_index
    b.PrependUOffsetTRelativeSlot(1, op_in, 0)
    b.PrependUOffsetTRelativeSlot(2, op_out, 0)
    b.PrependUint8Slot(3, OPTIONS_FULLY_CONNECTED, 0)
    b.PrependUOffsetTRelativeSlot(4, fc_opts, 0)
    return b.EndObject()


def _subgraph(b: flatbuffers.Builder, tensors: list, op: int) -> int:
    t_vec = _vector_offsets(b, tensors)
    sg_in = _vector_i32(b, [0])
    sg_out = _vector_i32(b, [3])
    ops = _vector_offsets(b, [op])
    sg_name = b.CreateString("main")
    b.StartObject(6)
    b.PrependUOffsetTRelativeSlot(0, t_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, sg_in, 0)
    b.PrependUOffsetTRelativeSlot(2, sg_out, 0)
    b.PrependUOffsetTRelativeSlot(3, ops, 0)
    b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
    return b.EndObject()


def _model(b: flatbuffers.Builder, subgraph: int, buffers: list) -> int:
    """Model table: one FULLY_CONNECTED v4 op code, the subgraph, buffers, signature serving_default."""
    b.StartObject(4)  # OperatorCode
    b.PrependInt8Slot(0, OP_FULLY_CONNECTED, 0)  # deprecated_builtin_code (< 127 so both agree)
    b.PrependInt32Slot(2, FC_VERSION, 1)
    b.PrependInt32Slot(3, OP_FULLY_CONNECTED, 0)
    opcode = b.EndObject()
    sig_in = _vector_offsets(b, [_tensor_map(b, "x", 0)])
    sig_out = _vector_offsets(b, [_tensor_map(b, "y", 3)])
    sig_key = b.CreateString("serving_default")
    b.StartObject(5)  # SignatureDef
    b.PrependUOffsetTRelativeSlot(0, sig_in, 0)
    b.PrependUOffsetTRelativeSlot(1, sig_out, 0)
    b.PrependUOffsetTRelativeSlot(2, sig_key, 0)
    b.PrependUint32Slot(4, 0, 0)
    sig = b.EndObject()
    opcodes_vec = _vector_offsets(b, [opcode])
    subgraphs_vec = _vector_offsets(b, [subgraph])
    buffers_vec = _vector_offsets(b, buffers)
    sigs_vec = _vector_offsets(b, [sig])
    desc = b.CreateString("elk npu fully_connected int8")
    b.StartObject(10)
    b.PrependUint32Slot(0, SCHEMA_VERSION, 0)
    b.PrependUOffsetTRelativeSlot(1, opcodes_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, desc, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
    b.PrependUOffsetTRelativeSlot(7, sigs_vec, 0)
    return b.EndObject()


def fully_connected_int8(weights_q: np.ndarray, w_scales: np.ndarray, bias_q: np.ndarray, chunk: int,
                         in_scale: float, in_zp: int, out_scale: float, out_zp: int,
                         name: str = "linear") -> FcModel:
    """y[chunk, rows] = FC(x[chunk, cols]) with int8 x/y (per-tensor scale, zero point), int8 symmetric
    per-output-channel weights (rows, cols) and an int32 bias (scale in_scale * w_scale[r], zero point 0)."""
    weights_q = np.ascontiguousarray(weights_q, dtype=np.int8)
    if weights_q.ndim != 2:
        raise TfliteError("weights must be 2-D (out, in)")
    rows, cols = weights_q.shape
    bias_q = np.ascontiguousarray(bias_q, dtype="<i4")
    w_scales = np.asarray(w_scales, dtype=np.float32)
    if bias_q.shape != (rows,) or w_scales.shape != (rows,) or chunk < 1:
        raise TfliteError("bias/scales must have one entry per output row; chunk >= 1")
    if not (in_scale > 0 and out_scale > 0 and np.all(w_scales > 0)):
        raise TfliteError("quantization scales must be positive")
    b = flatbuffers.Builder(rows * cols + 4 * rows + 4096)

    # Constant data first (built back to front: these end up near the end of the file).
    w_vec = _vector_bytes(b, weights_q.tobytes())
    w_end = b.Offset()
    b_vec = _vector_bytes(b, bias_q.tobytes())
    b_end = b.Offset()
    buffers = [_buffer(b, None), _buffer(b, w_vec), _buffer(b, b_vec), _buffer(b, None), _buffer(b, None)]

    bias_scales = (np.float64(in_scale) * w_scales.astype(np.float64)).astype(np.float32)
    tensors = [
        _tensor(b, "x", [chunk, cols], TENSOR_INT8, 3, _quant(b, [in_scale], [in_zp])),
        _tensor(b, f"{name}.weight", [rows, cols], TENSOR_INT8, 1, _quant(b, w_scales, [0] * rows, dim=0)),
        _tensor(b, f"{name}.bias", [rows], TENSOR_INT32, 2, _quant(b, bias_scales, [0] * rows, dim=0)),
        _tensor(b, "y", [chunk, rows], TENSOR_INT8, 4, _quant(b, [out_scale], [out_zp])),
    ]
    model = _model(b, _subgraph(b, tensors, _fc_operator(b)), buffers)
    b.Finish(model, file_identifier=FILE_IDENTIFIER)
    data = bytes(b.Output())
    # Offset() counts from the end of the buffer; vectors start with a u32 length.
    w_off = len(data) - w_end + 4
    b_off = len(data) - b_end + 4
    if data[w_off : w_off + rows * cols] != weights_q.tobytes() or data[b_off : b_off + 4 * rows] != bias_q.tobytes():
        raise TfliteError("internal: constant buffer offsets do not match the written bytes")
    return FcModel(data=data, weights_offset=w_off, bias_offset=b_off)
