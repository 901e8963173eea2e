"""NPU offload, host side: calibration, the .tflite writer, the NPU image section, and the bridges to
the C runtime's NPU session (sim and LiteRT backends) and to LiteRT's Python interpreter.
docs/npu.md describes the design and the byte layout."""
