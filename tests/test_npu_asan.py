"""The C NPU section parser and runner under AddressSanitizer + UBSan (scons mode=asan): damaged
sections (random bytes, truncation, field overwrites with the CRC recomputed so the deep checks run)
are rejected or run without one invalid access. Sim backend only (LiteRT is not built with ASan)."""

from conftest import ROOT, run_driver_under_asan

DRIVER = r"""
import random, struct, sys, zlib
import numpy as np
from elk import spec
from elk.convert import load_model
from elk.errors import ElkError
from elk.npu.calibrate import build_section
from elk.npu.native import Session
from elk.npu.section import pack_section, parse_section

fx = sys.argv[1]
m = load_model(fx + "/stories260K.bin", tokenizer=fx + "/tok512.bin")
base = pack_section(build_section(m, chunk=8, outlier_k=3.0))
rng = random.Random(5)
n = struct.unpack_from("<I", base, 12)[0]
table_end = spec.NPU_HEAD_SIZE + n * spec.NPU_ENTRY_SIZE


def fix_crc(b):
    if len(b) >= table_end:
        crc = zlib.crc32(bytes(b[spec.NPU_HEAD_SIZE:table_end]), zlib.crc32(bytes(b[:60])))
        struct.pack_into("<I", b, 60, crc)
    return b


accepted = rejected = 0
x = np.random.default_rng(0).standard_normal((11, 172)).astype(np.float32)
for k in range(400):
    b = bytearray(base)
    how = k % 4
    if how == 0:  # overwrite a field of an entry (CRC fixed: the entry checks must catch it)
        off = spec.NPU_HEAD_SIZE + rng.randrange(n) * spec.NPU_ENTRY_SIZE + rng.randrange(0, 80, 4)
        b[off:off + 4] = rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, rng.getrandbits(32), len(b), len(b) - 4]).to_bytes(4, "little")
        fix_crc(b)
    elif how == 1:
        b = fix_crc(b[:rng.randrange(len(b))])
    elif how == 2:
        b = bytearray(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    else:  # damage the requantization tables and outlier data (not covered by the CRC)
        for _ in range(20):
            b[rng.randrange(table_end, len(b))] = rng.getrandbits(8)
    try:
        s = Session(bytes(b), "sim")
    except ElkError:
        rejected += 1
        continue
    accepted += 1
    for role in spec.NPU_ROLES:
        for layer in range(5):
            cols = m.get(role, layer).shape[1]
            rows = m.get(role, layer).shape[0]
            s.linear(role, layer, x[:, :cols] if cols <= 172 else x, rows)
print("accepted", accepted, "rejected", rejected)
"""


def test_c_npu_section_and_runner_clean_under_asan_on_damaged_sections():
    proc = run_driver_under_asan(DRIVER, ROOT.parent / "shared" / "fixtures",
                                 scons_targets=("build/host-asan/libelk.so",))  # only the library it loads
    words = proc.stdout.split()
    accepted, rejected = int(words[1]), int(words[3])
    assert accepted > 50 and rejected > 150  # both the run path and the reject paths ran
