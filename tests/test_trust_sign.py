"""Host-side signing: keygen, sign, verify and the trailer, on a real packed stories260K image."""

import os
import struct
import subprocess
import sys
import zlib

import pytest
from conftest import ROOT, fixture_path

from elk import image, spec, trust

OFF = {n: o for n, o, _ in spec.HEADER_FIELDS}


@pytest.fixture(scope="module")
def plain_image(tmp_path_factory):
    from elk.convert import load_model

    model = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    path = tmp_path_factory.mktemp("img") / "s.elk"
    image.write_image(path, model, quant="q8_0")
    return path.read_bytes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    owner = trust.keygen(d / "owner")
    other = trust.keygen(d / "other")
    return {"owner": owner, "other": other}


def failing(findings):
    return {f.check for f in findings if not f.ok}


def test_keygen_writes_private_key_0600_and_refuses_to_overwrite(tmp_path):
    key, pub = trust.keygen(tmp_path / "k")
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in key.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    assert trust.public_bytes(trust.load_private_key(key)) == trust.load_public_key(pub)
    with pytest.raises(trust.TrustError, match="exists"):
        trust.keygen(tmp_path / "k")


def test_sign_sets_trailer_flag_keeps_header_valid_and_verifies(plain_image, keys):
    signed = trust.sign_bytes(plain_image, trust.load_private_key(keys["owner"][0]), security_counter=7)
    hdr = trust.read_header(signed)  # raises on a bad CRC
    assert hdr.flags & spec.IMAGE_FLAG_HAS_TRAILER
    assert hdr.security_counter == 7
    assert hdr.image_size == len(plain_image)
    assert signed[hdr.header_size:hdr.image_size] == plain_image[hdr.header_size:]  # payload unchanged
    assert failing(trust.verify_bytes(signed, trust.load_public_key(keys["owner"][1]))) == set()
    tlv = trust.decode_trailer(signed[hdr.image_size:])
    assert set(tlv) == {1, 2, 3}


def test_signature_covers_header_and_payload_as_documented(plain_image, keys):
    """docs/trust.md: Ed25519 over "elk image sig v1" || SHA-256(bytes [0, image_size))."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signed = trust.sign_bytes(plain_image, trust.load_private_key(keys["owner"][0]))
    size = struct.unpack_from("<Q", signed, OFF["image_size"])[0]
    import hashlib

    digest = hashlib.sha256(signed[:size]).digest()
    sig = trust.decode_trailer(signed[size:])[spec.TRAILER_TLV["ED25519"]]
    Ed25519PublicKey.from_public_bytes(trust.load_public_key(keys["owner"][1])).verify(
        sig, b"elk image sig v1" + digest)


def test_resigning_replaces_the_trailer(plain_image, keys):
    once = trust.sign_bytes(plain_image, trust.load_private_key(keys["owner"][0]))
    twice = trust.sign_bytes(once, trust.load_private_key(keys["other"][0]))
    assert len(twice) == len(once)
    assert failing(trust.verify_bytes(twice, trust.load_public_key(keys["other"][1]))) == set()
    assert "signature" in failing(trust.verify_bytes(twice, trust.load_public_key(keys["owner"][1])))


def test_verify_rejects_tampered_payload_byte(plain_image, keys):
    signed = bytearray(trust.sign_bytes(plain_image, trust.load_private_key(keys["owner"][0])))
    signed[len(plain_image) // 2] ^= 0x01
    bad = failing(trust.verify_bytes(bytes(signed), trust.load_public_key(keys["owner"][1])))
    assert {"hash", "digest", "signature"} <= bad


def test_verify_rejects_header_change_with_recomputed_crc(plain_image, keys):
    """An attacker can fix the CRC but not the signature: raise the security counter, redo the CRC."""
    signed = bytearray(trust.sign_bytes(plain_image, trust.load_private_key(keys["owner"][0]), security_counter=1))
    struct.pack_into("<I", signed, OFF["security_counter"], 99)
    struct.pack_into("<I", signed, 252, zlib.crc32(signed[:252]))
    found = trust.verify_bytes(bytes(signed), trust.load_public_key(keys["owner"][1]))
    assert failing(found) == {"digest", "signature"}


def test_verify_rejects_signature_by_other_key(plain_image, keys):
    signed = trust.sign_bytes(plain_image, trust.load_private_key(keys["other"][0]))
    found = trust.verify_bytes(signed, trust.load_public_key(keys["owner"][1]))
    assert failing(found) == {"key", "signature"}
    key_line = next(f.detail for f in found if f.check == "key")
    assert trust.key_id(trust.load_public_key(keys["other"][1])).hex() in key_line


def test_verify_with_key_rejects_unsigned_image(plain_image, keys):
    found = trust.verify_bytes(plain_image, trust.load_public_key(keys["owner"][1]))
    assert failing(found) == {"signature"}
    assert failing(trust.verify_bytes(plain_image)) == set()


@pytest.mark.parametrize("cut", [1, 8, 40, 80])
def test_verify_reports_truncated_trailer(plain_image, keys, cut):
    signed = trust.sign_bytes(plain_image, trust.load_private_key(keys["owner"][0]))
    found = trust.verify_bytes(signed[:-cut], trust.load_public_key(keys["owner"][1]))
    assert "trailer" in failing(found)


def test_decode_trailer_rejects_overlong_record_and_duplicates():
    good = trust.encode_trailer([(1, bytes(8))])
    assert trust.decode_trailer(good) == {1: bytes(8)}
    over = bytearray(good)
    struct.pack_into("<I", over, 12, 9)
    with pytest.raises(trust.TrustError, match="runs past"):
        trust.decode_trailer(bytes(over))
    with pytest.raises(trust.TrustError, match="duplicate"):
        trust.decode_trailer(trust.encode_trailer([(1, bytes(8)), (1, bytes(8))]))
    with pytest.raises(trust.TrustError, match="expected 64"):
        trust.decode_trailer(trust.encode_trailer([(3, bytes(63))]))
    assert trust.decode_trailer(trust.encode_trailer([(77, b"future")])) == {77: b"future"}


def test_sign_refuses_image_with_damaged_payload(plain_image, keys):
    bad = bytearray(plain_image)
    bad[-1] ^= 0xFF
    with pytest.raises(trust.TrustError, match="refusing to sign"):
        trust.sign_bytes(bytes(bad), trust.load_private_key(keys["owner"][0]))


def run_elk(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT / "host")}, timeout=60)


def test_cli_keygen_sign_and_errors_are_one_line(plain_image, keys, tmp_path):
    img = tmp_path / "m.elk"
    img.write_bytes(plain_image)
    r = run_elk("keygen", "-o", tmp_path / "me", "--no-passphrase")
    assert r.returncode == 0 and "key id" in r.stdout
    r = run_elk("sign", img, "--key", tmp_path / "me.key", "--security-counter", "5")
    assert r.returncode == 0, r.stderr
    assert trust.read_header(img.read_bytes()).security_counter == 5
    for args, msg in [
        (("sign", img, "--key", tmp_path / "me.pub"), "this is a public key"),
        (("sign", img, "--key", tmp_path / "m.elk"), "not an Ed25519 private key"),
        (("sign", img, "--key", tmp_path / "nope.key"), "cannot read private key"),
        (("sign", tmp_path / "me.pub", "--key", tmp_path / "me.key"), "image"),
        (("sign", img, "--key", tmp_path / "me.key", "--security-counter", "-1"), "security counter"),
        (("keygen", "-o", tmp_path / "me"), "exists"),
    ]:
        r = run_elk(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("elk: error:") and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_verify_with_key_prints_one_line_per_failing_check(plain_image, keys, tmp_path):
    img = tmp_path / "v.elk"
    img.write_bytes(trust.sign_bytes(plain_image, trust.load_private_key(keys["owner"][0])))
    r = run_elk("verify", img, "--key", keys["owner"][1])
    assert r.returncode == 0 and "ok   signature: valid Ed25519" in r.stdout, r.stdout
    r = run_elk("verify", img, "--key", keys["other"][1])
    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL")]
    assert r.returncode == 2 and [ln.split(":")[0] for ln in fails] == ["FAIL signing key", "FAIL signature"]
    data = bytearray(img.read_bytes())
    data[100000] ^= 0x55
    img.write_bytes(bytes(data))
    r = run_elk("verify", img, "--key", keys["owner"][1])
    fails = [ln.split(":")[0] for ln in r.stdout.splitlines() if ln.startswith("FAIL")]
    assert r.returncode == 2 and fails == ["FAIL payload SHA-256", "FAIL signed digest", "FAIL signature"], r.stdout
