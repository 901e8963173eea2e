"""ELK_E_RANGE errors say what was out of range at their source: the C detail names the value and its
limit, and the generic "value out of range" text of the code is not glued onto it (it used to add
"(context full, dimension too large)" to every range error, e.g. a too-large --threads or dimension)."""

import struct
import zlib

import pytest

from conftest import pack_stories260k, run_elk

from elk import spec
from elk.errors import RuntimeFailure, code_name
from elk.runtime import Model

E_RANGE = spec.ERRORS["E_RANGE"][0]


@pytest.fixture(scope="module")
def image(tmp_path_factory, host_build):
    return pack_stories260k(tmp_path_factory.mktemp("range") / "s.elk", quant="q8_0")


def test_range_code_text_does_not_claim_a_full_context():
    assert "context full" not in code_name(E_RANGE)[1]
    assert "context full" not in spec.ERRORS["E_RANGE"][1]


def test_runtime_failure_with_a_detail_names_the_code_without_the_generic_text():
    e = RuntimeFailure(E_RANGE, "config: dim 1073741824 above the limit 65536")
    assert str(e) == "config: dim 1073741824 above the limit 65536 (ELK_E_RANGE)"
    assert str(RuntimeFailure(E_RANGE)) == f"{spec.ERRORS['E_RANGE'][1]} (ELK_E_RANGE)"


def test_absurd_dimension_error_names_the_dimension_only(image, tmp_path):
    data = bytearray(image.read_bytes())
    struct.pack_into("<I", data, 100, 1 << 30)  # config dim, header CRC recomputed
    struct.pack_into("<I", data, 252, zlib.crc32(data[:252]))
    bad = tmp_path / "absurd.elk"
    bad.write_bytes(bytes(data))
    p = run_elk("run", bad, "-p", "hi", "-n", "2")
    assert p.returncode == 2
    assert p.stderr.strip().endswith("dim 1073741824 above the limit 65536 (ELK_E_RANGE)"), p.stderr
    assert "context full" not in p.stderr


def test_context_larger_than_seq_len_is_not_called_a_full_context(image):
    with pytest.raises(RuntimeFailure) as e:
        Model(image, n_ctx=4096)
    assert e.value.code == E_RANGE
    assert str(e.value).endswith("context 4096 is larger than the model's seq_len 512 (ELK_E_RANGE)")
    assert "context full" not in str(e.value)
