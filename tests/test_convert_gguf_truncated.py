"""A GGUF file cut short at any point (header, key/values, tensor infos, tensor data) is one line naming
what is missing, where, and how long the file is: never the gguf package's numpy reshape message."""

import pytest

from conftest import fixture_path, run_elk

from elk import gguf_guard
from elk.errors import FormatError

GGUF = fixture_path("stories260K.gguf")


@pytest.fixture(scope="module")
def layout():
    """(data start, [(name, absolute offset, bytes)]) of the fixture, from the gguf package itself."""
    import gguf

    r = gguf.GGUFReader(str(GGUF))
    return r.data_offset, [(t.name, int(t.data_offset), int(t.n_bytes)) for t in r.tensors]


def _cut(tmp_path, n: int):
    p = tmp_path / f"cut{n}.gguf"
    p.write_bytes(GGUF.read_bytes()[:n])
    return p


def test_cut_inside_tensor_data_names_the_tensor_its_offset_and_the_file_size(tmp_path, layout):
    start, tensors = layout
    name, off, size = tensors[len(tensors) // 2]
    cut = off + size // 2
    p = run_elk("pack", _cut(tmp_path, cut), "-o", tmp_path / "o.elk")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines == [f"elk: error: {tmp_path / f'cut{cut}.gguf'}: truncated: tensor {name} needs {size} bytes "
                     f"at offset {off}, file has {cut}"], p.stderr


def test_cut_inside_the_key_values_says_which_key(tmp_path):
    p = run_elk("pack", _cut(tmp_path, 9000), "-o", tmp_path / "o.elk")
    assert p.returncode == 2
    line = p.stderr.strip()
    assert "\n" not in line and ": truncated" in line and "key 2 (" in line and "file has 9000" in line, line


def test_every_cut_point_is_one_truncated_line(tmp_path, layout):
    """Cuts in the header, each key/value region, the tensor infos, the padding and inside or at the
    end of every tensor: FormatError with "truncated" (the guard runs before the gguf package)."""
    start, tensors = layout
    size = GGUF.stat().st_size
    cuts = {4, 10, 20, 23, 24, 30, 100, 3000, 9000, 11400, 12000, start - 1, start}
    for _, off, n in tensors:
        cuts |= {off + 1, off + n - 1}
    data = GGUF.read_bytes()
    for cut in sorted(c for c in cuts if 0 < c < size):
        p = tmp_path / "c.gguf"
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError) as e:
            gguf_guard.check(p)
        msg = str(e.value)
        assert "truncated" in msg and f"file has {cut}" in msg and "\n" not in msg, (cut, msg)
    gguf_guard.check(GGUF)  # the whole file passes


def test_tensor_past_the_end_with_an_absurd_offset_is_reported_not_reshaped(tmp_path, layout):
    """The last tensor's offset field rewritten to point past the end (a corrupt, not cut, file)."""
    import struct

    start, tensors = layout
    data = bytearray(GGUF.read_bytes())
    name, off, n = tensors[-1]
    key = name.encode()
    at = data.index(struct.pack("<Q", len(key)) + key, 0, start)  # its tensor info
    dims = struct.unpack_from("<I", data, at + 8 + len(key))[0]
    field = at + 8 + len(key) + 4 + 8 * dims + 4
    struct.pack_into("<Q", data, field, 1 << 40)
    p = tmp_path / "far.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=rf"truncated: tensor {name} needs {n} bytes at offset \d+, file has"):
        gguf_guard.check(p)


def test_damage_message_with_a_control_character_in_a_key_name_stays_one_line(tmp_path):
    """Fuzz find: a key name holding a newline, followed by an unknown value type, printed the name raw."""
    import struct

    data = bytearray(GGUF.read_bytes())
    at = 24 + 8  # the first key's name, after the header and its u64 length
    n = struct.unpack_from("<Q", data, 24)[0]
    data[at + 3] = 0x0A
    struct.pack_into("<I", data, at + n, 671347)  # its value type
    p = tmp_path / "nl.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError) as e:
        gguf_guard.check(p)
    assert "\n" not in str(e.value) and "\\x0a" in str(e.value) and "unknown value type 671347" in str(e.value)
