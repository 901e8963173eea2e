"""The C header of shared constants must be exactly what host/elk/spec.py generates."""

from conftest import ROOT

from elk import spec


def test_spec_header_matches_python_source():
    committed = (ROOT / "firmware" / "include" / "elk" / "spec.h").read_text()
    assert committed == spec.c_header(), "firmware/include/elk/spec.h is stale: run `cd host && python -m elk.spec`"


def test_spec_header_fields_fit_and_do_not_overlap():
    sizes = {"u8[32]": 32, "char[64]": 64, "u16": 2, "u32": 4, "u64": 8, "f32": 4}
    spans = sorted((off, off + sizes[t], name) for name, off, t in spec.HEADER_FIELDS)
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        assert a1 <= b0, f"header fields {an} and {bn} overlap"
    assert spans[-1][1] == spec.IMAGE_HEADER_SIZE, "header_crc32 must be the last 4 bytes of the header"


def test_spec_type_ids_are_ggml_ids():
    # GGUF stores ggml type ids; elk uses the same numbers so tensors map one to one.
    import gguf

    for name, (tid, block_elems, block_bytes) in spec.TENSOR_TYPES.items():
        gtype = gguf.GGMLQuantizationType[name]
        assert int(gtype) == tid
        assert gguf.GGML_QUANT_SIZES[gtype] == (block_elems, block_bytes)

