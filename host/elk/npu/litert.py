"""LiteRT on the host: where the C runtime finds libLiteRt.so (the ai-edge-litert wheel ships it), and
running a .tflite through LiteRT's Python Interpreter as an independent check of the C backends.
Falls back to tflite-runtime's interpreter only when ai-edge-litert is not installed."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import numpy as np

from elk.errors import ElkError


class LiteRtError(ElkError):
    pass


def library_path() -> pathlib.Path:
    """libLiteRt.so of the installed ai-edge-litert wheel (or $ELK_LITERT_LIB)."""
    env = os.environ.get("ELK_LITERT_LIB")
    if env:
        path = pathlib.Path(env)
    else:
        spec = importlib.util.find_spec("ai_edge_litert")
        if spec is None or not spec.submodule_search_locations:
            raise LiteRtError("LiteRT not installed (pip install ai-edge-litert) and ELK_LITERT_LIB not set")
        path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "libLiteRt.so"
    if not path.is_file():
        raise LiteRtError(f"{path}: LiteRT C library not found")
    return path


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise LiteRtError("neither ai-edge-litert nor tflite-runtime is installed") from None
    return Interpreter


def run_tflite(model: bytes, x: np.ndarray) -> np.ndarray:
    """Run a one-input, one-output .tflite on x through LiteRT's Python Interpreter."""
    it = _interpreter_class()(model_content=bytes(model))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]).reshape(inp["shape"]))
    it.invoke()
    return it.get_tensor(out["index"]).copy()
