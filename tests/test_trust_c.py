"""The board's trust decision in C (firmware/src/trust, libsodium), fed images signed by the Python tool:
unsigned/foreign/tampered/downgraded images, the A/B provisioning record and re-provisioning requests."""

import struct

import cffi
import pytest
from conftest import fixture_path, owner_keys, pack_stories260k

from elk import image, spec, trust

CDEF = """
typedef struct { const uint8_t *key_id, *image_sha256, *signature; uint32_t size; } elk_trust_trailer;
typedef struct { uint32_t sequence, flags, security_floor; uint8_t owner_key[32]; uint32_t challenge_counter; } elk_trust_prov;
void elk_trust_challenge(const uint8_t *uid, uint32_t uid_len, uint32_t counter, uint32_t k,
                         uint64_t clock_us, uint8_t *out);
int elk_trust_trailer_parse(elk_trust_trailer *t, const uint8_t *data, uint64_t avail, char *err, size_t cap);
int elk_trust_prov_decode(elk_trust_prov *p, const uint8_t *slot, uint64_t size);
void elk_trust_prov_encode(const elk_trust_prov *p, uint8_t *out);
int elk_trust_prov_select(const uint8_t *slot0, const uint8_t *slot1, uint64_t slot_size,
                          elk_trust_prov *out, int *active);
int elk_trust_prov_request(const elk_trust_prov *cur, const uint8_t *nonce, const uint8_t *new_key,
                           uint32_t new_flags, const uint8_t *signature, elk_trust_prov *next,
                           char *reason, size_t cap);
int elk_trust_check_image(const uint8_t *image, uint64_t avail, const elk_trust_prov *prov,
                          uint32_t running, int *warning, char *reason, size_t cap);
int elk_trust_check_image_hashed(const uint8_t *image, uint64_t avail, const elk_trust_prov *prov,
                                 uint32_t running, const uint8_t *digest, uint64_t digest_len,
                                 int *warning, char *reason, size_t cap);
"""
E = {name: code for name, (code, _) in spec.ERRORS.items()}
OFF = {n: o for n, o, _ in spec.HEADER_FIELDS}


@pytest.fixture(scope="module")
def lib(host_build):
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(host_build / "libelk_trust.so"))


@pytest.fixture(scope="module")
def plain_image(tmp_path_factory):
    return pack_stories260k(tmp_path_factory.mktemp("img") / "s.elk", quant="q8_0").read_bytes()

    model = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    path = tmp_path_factory.mktemp("img") / "s.elk"
    image.write_image(path, model, quant="q8_0")
    return path.read_bytes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    made = owner_keys(tmp_path_factory.mktemp("keys"), ("owner", "other"))
    return {name: (k["priv"], k["raw"]) for name, k in made.items()}


def prov(ffi, key=None, seq=1, floor=0):
    p = ffi.new("elk_trust_prov *")
    p.sequence, p.security_floor = seq, floor
    if key is not None:
        p.flags = spec.PROV_FLAG_OWNER_KEY
        ffi.memmove(p.owner_key, key, 32)
    return p


def check(lib, data, p, running=0):
    ffi, c = lib
    warn, reason = ffi.new("int *"), ffi.new("char[200]")
    rc = c.elk_trust_check_image(data, len(data), p, running, warn, reason, 200)
    return rc, warn[0], ffi.string(reason).decode()


def test_unsigned_image_on_unprovisioned_board_is_accepted_with_warning(lib, plain_image):
    rc, warn, reason = check(lib, plain_image, prov(lib[0], seq=0))
    assert (rc, warn) == (E["OK"], 1) and "no owner key" in reason


def test_provisioned_board_accepts_owner_signed_image(lib, plain_image, keys):
    signed = trust.sign_bytes(plain_image, keys["owner"][0], security_counter=4)
    assert check(lib, signed, prov(lib[0], keys["owner"][1]), running=4) == (E["OK"], 0, "")


def test_provisioned_board_refuses_unsigned_image(lib, plain_image, keys):
    rc, _, reason = check(lib, plain_image, prov(lib[0], keys["owner"][1]))
    assert rc == E["E_AUTH"] and "not signed" in reason


def test_provisioned_board_refuses_image_signed_by_other_key(lib, plain_image, keys):
    signed = trust.sign_bytes(plain_image, keys["other"][0])
    rc, _, reason = check(lib, signed, prov(lib[0], keys["owner"][1]))
    assert rc == E["E_AUTH"]
    assert trust.key_id(keys["other"][1]).hex() in reason and trust.key_id(keys["owner"][1]).hex() in reason


def test_provisioned_board_refuses_image_with_other_key_id_stripped(lib, plain_image, keys):
    """Without the KEY_ID record the board still runs the Ed25519 check and refuses."""
    signed = trust.sign_bytes(plain_image, keys["other"][0])
    size = len(plain_image)
    tlv = trust.decode_trailer(signed[size:])
    forged = signed[:size] + trust.encode_trailer([(3, tlv[3])])
    rc, _, reason = check(lib, forged, prov(lib[0], keys["owner"][1]))
    assert rc == E["E_AUTH"] and "does not verify" in reason


@pytest.mark.parametrize("offset", [300, 200000, -1])
def test_tampered_payload_byte_is_refused(lib, plain_image, keys, offset):
    signed = bytearray(trust.sign_bytes(plain_image, keys["owner"][0]))
    signed[offset % len(plain_image)] ^= 0x20
    rc, _, reason = check(lib, bytes(signed), prov(lib[0], keys["owner"][1]))
    assert rc == E["E_AUTH"] and "changed after signing" in reason


def test_tampered_digest_and_signature_consistent_still_refused(lib, plain_image, keys):
    """Replace the trailer's digest with the tampered image's real digest: the signature check catches it."""
    import hashlib

    signed = bytearray(trust.sign_bytes(plain_image, keys["owner"][0]))
    size = len(plain_image)
    signed[5000] ^= 1
    tlv = trust.decode_trailer(bytes(signed[size:]))
    forged = bytes(signed[:size]) + trust.encode_trailer(
        [(1, tlv[1]), (2, hashlib.sha256(signed[:size]).digest()), (3, tlv[3])])
    rc, _, reason = check(lib, forged, prov(lib[0], keys["owner"][1]))
    assert rc == E["E_AUTH"] and "does not verify" in reason


def test_downgrade_to_lower_security_counter_is_refused(lib, plain_image, keys):
    old = trust.sign_bytes(plain_image, keys["owner"][0], security_counter=2)
    rc, _, reason = check(lib, old, prov(lib[0], keys["owner"][1]), running=3)
    assert rc == E["E_ROLLBACK"] and "2 is lower than the board's 3" in reason
    # also on an unprovisioned board: the counter is part of the CRC-protected header
    rc, _, _ = check(lib, old, prov(lib[0], seq=0), running=3)
    assert rc == E["E_ROLLBACK"]


def test_header_crc_damage_is_reported_before_signature(lib, plain_image, keys):
    signed = bytearray(trust.sign_bytes(plain_image, keys["owner"][0]))
    struct.pack_into("<I", signed, OFF["security_counter"], 50)
    rc, _, reason = check(lib, bytes(signed), prov(lib[0], keys["owner"][1]))
    assert rc == E["E_CRC"] and "CRC" in reason


@pytest.mark.parametrize("cut", [1, 7, 8, 9, 50, 100])
def test_truncated_trailer_is_refused_without_reading_past_the_end(lib, plain_image, keys, cut):
    signed = trust.sign_bytes(plain_image, keys["owner"][0])
    rc, _, reason = check(lib, signed[:-cut], prov(lib[0], keys["owner"][1]))
    assert rc == E["E_AUTH"] and ("trailer" in reason or "signature" in reason), reason


def test_c_and_python_trailer_parsers_agree(lib, plain_image, keys):
    ffi, c = lib
    signed = trust.sign_bytes(plain_image, keys["owner"][0])
    tail = signed[len(plain_image):]
    t, err = ffi.new("elk_trust_trailer *"), ffi.new("char[128]")
    # erased flash (0xFF) after the trailer is allowed on the board
    buf = tail + b"\xff" * 64
    assert c.elk_trust_trailer_parse(t, buf, len(buf), err, 128) == E["OK"]
    assert t.size == len(tail)
    assert ffi.buffer(t.signature, 64)[:] == trust.decode_trailer(tail)[3]
    bad = bytearray(tail)
    struct.pack_into("<I", bad, 4, 5000)
    assert c.elk_trust_trailer_parse(t, bytes(bad), len(bad), err, 128) == E["E_BOUNDS"]


# ---------------------------------------------------------------------------------------------
# Provisioning record


def test_prov_record_c_encoding_matches_python(lib, keys):
    ffi, c = lib
    p = prov(ffi, keys["owner"][1], seq=9, floor=3)
    p.challenge_counter = 0x01020304
    out = ffi.new("uint8_t[128]")
    c.elk_trust_prov_encode(p, out)
    rec = trust.ProvRecord(9, spec.PROV_FLAG_OWNER_KEY, keys["owner"][1], 3, 0x01020304)
    assert bytes(out) == trust.encode_prov(rec)
    assert trust.decode_prov(bytes(out)) == rec
    assert bytes(out[52:56]) == bytes([4, 3, 2, 1])  # docs/trust.md: challenge_counter at offset 52
    back = ffi.new("elk_trust_prov *")
    assert c.elk_trust_prov_decode(back, out, 128) == 0 and back.challenge_counter == 0x01020304


def test_challenge_without_rng_is_the_documented_sha256_and_differs_per_input(lib):
    """docs/trust.md: SHA-256("elk challenge v1" || u32 uid_len || uid || u32 counter || u32 k || u64 clock)[:16]."""
    import hashlib

    ffi, c = lib
    out = ffi.new("uint8_t[16]")

    def ch(uid, counter, k, clock):
        c.elk_trust_challenge(uid, len(uid), counter, k, clock, out)
        return bytes(out)

    uid = b"board-0001"
    want = hashlib.sha256(b"elk challenge v1" + struct.pack("<I", len(uid)) + uid
                          + struct.pack("<IIQ", 7, 2, 123456789)).digest()[:16]
    assert ch(uid, 7, 2, 123456789) == want
    seen = {ch(u, n, k, 0) for u in (b"", b"board-0001", b"board-0002") for n in range(4) for k in range(4)}
    assert len(seen) == 48  # every (board, counter, k) its own challenge


def test_prov_select_prefers_newest_valid_slot_and_survives_torn_write(lib, keys):
    ffi, c = lib
    a = trust.encode_prov(trust.ProvRecord(4, spec.PROV_FLAG_OWNER_KEY, keys["owner"][1], 0))
    b = trust.encode_prov(trust.ProvRecord(5, spec.PROV_FLAG_OWNER_KEY, keys["other"][1], 0))
    out, active = ffi.new("elk_trust_prov *"), ffi.new("int *")
    c.elk_trust_prov_select(a, b, 128, out, active)
    assert active[0] == 1 and bytes(out.owner_key) == keys["other"][1]
    torn = b[:60] + b"\xff" * 68  # power lost half-way through writing slot 1
    c.elk_trust_prov_select(a, torn, 128, out, active)
    assert active[0] == 0 and out.sequence == 4 and bytes(out.owner_key) == keys["owner"][1]
    erased = b"\xff" * 128
    c.elk_trust_prov_select(erased, erased, 128, out, active)
    assert active[0] == -1 and out.sequence == 0
    assert trust.select_prov(a, torn)[1] == 0 and trust.select_prov(erased, erased)[1] == -1


NONCE = bytes(range(100, 100 + spec.TRUST_NONCE_SIZE))  # the board's challenge in these tests


def request(lib, cur, new_key, flags, sig, nonce=NONCE):
    ffi, c = lib
    nxt, reason = ffi.new("elk_trust_prov *"), ffi.new("char[200]")
    rc = c.elk_trust_prov_request(cur, nonce, new_key, flags, sig if sig is not None else ffi.NULL, nxt, reason, 200)
    return rc, nxt, ffi.string(reason).decode()


def test_first_provisioning_needs_no_signature(lib, keys):
    rc, nxt, _ = request(lib, prov(lib[0], seq=0), keys["owner"][1], spec.PROV_FLAG_OWNER_KEY, None)
    assert rc == E["OK"] and nxt.sequence == 1 and bytes(nxt.owner_key) == keys["owner"][1]


def test_reprovisioning_requires_a_request_signed_by_the_old_key(lib, keys):
    owner_priv, owner_pub = keys["owner"]
    other_priv, other_pub = keys["other"]
    cur = prov(lib[0], owner_pub, seq=3)
    flags = spec.PROV_FLAG_OWNER_KEY
    rc, _, reason = request(lib, cur, other_pub, flags, None)
    assert rc == E["E_AUTH"] and "signed by it" in reason
    forged = trust.sign_provision_request(other_priv, other_pub, 4, flags, NONCE)  # new key signs for itself
    assert request(lib, cur, other_pub, flags, forged)[0] == E["E_AUTH"]
    replay = trust.sign_provision_request(owner_priv, other_pub, 3, flags, NONCE)  # an older request replayed
    assert request(lib, cur, other_pub, flags, replay)[0] == E["E_AUTH"]
    good = trust.sign_provision_request(owner_priv, other_pub, 4, flags, NONCE)
    elsewhere = bytes(spec.TRUST_NONCE_SIZE)  # the same request at another board (its own challenge)
    rc, _, reason = request(lib, cur, other_pub, flags, good, nonce=elsewhere)
    assert rc == E["E_AUTH"] and "challenge" in reason
    rc, nxt, _ = request(lib, cur, other_pub, flags, good)
    assert rc == E["OK"] and nxt.sequence == 4 and bytes(nxt.owner_key) == other_pub
    clear = trust.sign_provision_request(owner_priv, bytes(32), 4, 0, NONCE)
    rc, nxt, _ = request(lib, cur, bytes(32), 0, clear)
    assert rc == E["OK"] and nxt.flags == 0


def test_provisioning_refuses_a_key_that_is_no_curve_point(lib, keys):
    zero = bytes(32)  # also the identity's neighbourhood: small-order points never verify anything
    rc, _, reason = request(lib, prov(lib[0], seq=0), zero, spec.PROV_FLAG_OWNER_KEY, None)
    assert rc == E["E_INVAL"] and "not a valid Ed25519 public key" in reason
    rc, _, _ = request(lib, prov(lib[0], seq=0), b"\xff" * 32, spec.PROV_FLAG_OWNER_KEY, None)
    assert rc == E["E_INVAL"]


def test_boot_check_digest_is_used_only_when_it_covers_the_signed_bytes(lib, plain_image, keys):
    """Secure boot hands the SHA-256 it computed while checking the slot to the trust check, so a big
    image is hashed once: that digest decides, but only when it covers exactly [0, image_size)."""
    import hashlib

    ffi, c = lib
    signed = trust.sign_bytes(plain_image, keys["owner"][0])
    size = trust.read_header(signed).image_size
    good, bad = hashlib.sha256(signed[:size]).digest(), bytes(32)
    p = prov(ffi, keys["owner"][1])

    def run(digest, n):
        warn, reason = ffi.new("int *"), ffi.new("char[200]")
        rc = c.elk_trust_check_image_hashed(signed, len(signed), p, 0, digest, n, warn, reason, 200)
        return rc, ffi.string(reason).decode()

    assert run(good, size) == (E["OK"], "")
    rc, reason = run(bad, size)  # the given digest is what gets verified
    assert rc == E["E_AUTH"] and "changed after signing" in reason
    assert run(bad, size - 1)[0] == E["OK"]  # wrong length: the check hashes the image itself
    assert run(ffi.NULL, 0)[0] == E["OK"]


def undefined_symbols(obj):
    import subprocess

    out = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_signed_digest_and_boot_hash_use_libsodium_not_the_runtime_sha256(host_build):
    """No home-made crypto under the signature check: D (the SHA-256 the Ed25519 signature covers) is
    computed by libsodium at FLASH_END/COMMIT (trust.c) and in the power-on check (bootcheck.c)."""
    objs = {"trust": host_build / "obj/src/trust/trust.o", "bootcheck": host_build / "obj/src/main/bootcheck.o"}
    trust_syms = undefined_symbols(objs["trust"])
    assert "crypto_sign_verify_detached" in trust_syms
    assert {"crypto_hash_sha256", "crypto_hash_sha256_update"} <= trust_syms
    for name, obj in objs.items():
        assert not {s for s in undefined_symbols(obj) if s.startswith("elk_sha256")}, name


def test_trust_sha256_matches_hashlib_at_block_edges(lib, host_build):
    import hashlib

    ffi = cffi.FFI()
    ffi.cdef("""typedef struct { uint8_t state[112]; } elk_trust_sha256;
        void elk_trust_sha256_init(elk_trust_sha256 *s);
        void elk_trust_sha256_update(elk_trust_sha256 *s, const uint8_t *p, uint64_t n);
        void elk_trust_sha256_final(elk_trust_sha256 *s, uint8_t *out);""")
    c = ffi.dlopen(str(host_build / "libelk_trust.so"))
    data = bytes(range(256)) * 8
    for n in (0, 1, 55, 56, 63, 64, 65, 1000, len(data)):
        s, out = ffi.new("elk_trust_sha256 *"), ffi.new("uint8_t[32]")
        c.elk_trust_sha256_init(s)
        c.elk_trust_sha256_update(s, data[: n // 3], n // 3)
        c.elk_trust_sha256_update(s, data[n // 3:n], n - n // 3)
        c.elk_trust_sha256_final(s, out)
        assert bytes(out) == hashlib.sha256(data[:n]).digest(), n
