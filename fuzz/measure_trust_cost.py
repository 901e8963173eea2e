"""Measure the cost of signing and of the board's trust check on a 64 MiB signed image (docs/trust.md "Cost").

    python fuzz/measure_trust_cost.py [build/host/libelk_trust.so]

Signing runs in Python (elk.trust); the check is the C function elk_trust_check_image through cffi,
best of 3. The image is the stories260K q8_0 image with its payload padded to 64 MiB (hash and CRC
redone): the cost is linear in bytes. A measurement script, not a test: nothing is asserted.
"""

import hashlib
import pathlib
import struct
import sys
import tempfile
import time
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))

import cffi  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from elk import image, spec, trust  # noqa: E402
from elk.convert import load_model  # noqa: E402

CDEF = """typedef struct { uint32_t sequence, flags, security_floor; uint8_t owner_key[32]; } elk_trust_prov;
int elk_trust_check_image(const uint8_t *image, uint64_t avail, const elk_trust_prov *prov, uint32_t running,
                          int *warning, char *reason, size_t cap);"""


def padded_image(size: int) -> bytes:
    fix = ROOT.parent / "shared" / "fixtures"
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "s.elk"
        image.write_image(path, load_model(fix / "stories260K.bin", tokenizer=fix / "tok512.bin"), quant="q8_0")
        img = bytearray(path.read_bytes())
    img += bytes(size - len(img))
    struct.pack_into("<Q", img, 16, size)                         # image_size
    struct.pack_into("<Q", img, 48, size - spec.IMAGE_HEADER_SIZE)  # payload_size
    img[56:88] = hashlib.sha256(img[spec.IMAGE_HEADER_SIZE:]).digest()
    struct.pack_into("<I", img, 252, zlib.crc32(img[:252]))
    return bytes(img)


def main() -> None:
    lib_path = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "build" / "host" / "libelk_trust.so")
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    lib = ffi.dlopen(lib_path)
    priv = Ed25519PrivateKey.generate()
    img = padded_image(64 << 20)
    t = time.perf_counter()
    signed = trust.sign_bytes(img, priv)
    t_sign = time.perf_counter() - t
    p = ffi.new("elk_trust_prov *")
    p.sequence, p.flags = 1, spec.PROV_FLAG_OWNER_KEY
    ffi.memmove(p.owner_key, trust.public_bytes(priv), 32)
    warn, reason = ffi.new("int *"), ffi.new("char[160]")
    best, rc = 1e9, None
    for _ in range(3):
        t = time.perf_counter()
        rc = lib.elk_trust_check_image(signed, len(signed), p, 0, warn, reason, 160)
        best = min(best, time.perf_counter() - t)
    print(f"{lib_path}: 64 MiB image: elk sign {t_sign:.2f} s (Python, re-hashes the payload); "
          f"board check rc={rc} {best * 1000:.0f} ms = {64 / best:.0f} MiB/s")


if __name__ == "__main__":
    main()
