"""Owner keys, image signatures and the signature trailer (docs/trust.md).

Ed25519 through the `cryptography` package; this module only frames bytes around it.
Not here: image structure checks (elk.image), talking to a board (elk.link); the board's own
check is C (firmware/src/trust/trust.c) and follows the same rules as `check_signature` below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import struct
import zlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from elk import spec
from elk.errors import ElkError

HDR = spec.IMAGE_HEADER_SIZE
OFF = {name: off for name, off, _ in spec.HEADER_FIELDS}
TLV = spec.TRAILER_TLV
TLV_SIZES = {TLV["KEY_ID"]: spec.TRUST_KEY_ID_SIZE, TLV["IMAGE_SHA256"]: 32, TLV["ED25519"]: 64}
TLV_NAMES = {v: k for k, v in TLV.items()}


class TrustError(ElkError):
    """A key, signature or trailer problem (bad key file, tampered or unsigned image, wrong key)."""


# ---------------------------------------------------------------------------------------------
# Keys


PASSPHRASE_ENV = "ELK_KEY_PASSPHRASE"


def _passphrase_file(path) -> bytes:
    """The passphrase in a file: its bytes without one trailing newline (as `echo pw > f` writes it)."""
    data = _read(path, "passphrase file")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise TrustError(f"passphrase file {path} is empty")
    return data


def _prompt(text: str) -> bytes:
    import getpass

    try:
        pw = getpass.getpass(text)
    except EOFError:
        raise TrustError("no passphrase read from the terminal") from None
    return pw.encode("utf-8")


def _stdin_is_tty() -> bool:
    import sys

    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def passphrase_for_new_key(passphrase_file=None, no_passphrase: bool = False) -> bytes | None:
    """The passphrase `elk keygen` encrypts with: --passphrase-file, else $ELK_KEY_PASSPHRASE, else asked
    twice on the terminal; None only with --no-passphrase. Nothing to go on: TrustError (a key is never
    left unencrypted by accident)."""
    if no_passphrase:
        if passphrase_file:
            raise TrustError("pass either --passphrase-file or --no-passphrase, not both")
        return None
    if passphrase_file:
        return _passphrase_file(passphrase_file)
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env:
            raise TrustError(f"{PASSPHRASE_ENV} is set but empty (unset it, or use --no-passphrase "
                             "for an unencrypted key)")
        return env.encode("utf-8")
    if not _stdin_is_tty():
        raise TrustError(f"no passphrase for the new private key: set {PASSPHRASE_ENV}, pass "
                         "--passphrase-file FILE, run on a terminal, or --no-passphrase for an unencrypted key")
    first = _prompt("Passphrase for the new private key: ")
    if not first:
        raise TrustError("empty passphrase (use --no-passphrase for an unencrypted key)")
    if _prompt("Same passphrase again: ") != first:
        raise TrustError("the two passphrases differ; no key written")
    return first


def keygen(prefix: str | os.PathLike, force: bool = False,
           passphrase: bytes | None = None) -> tuple[pathlib.Path, pathlib.Path]:
    """Write <prefix>.key (PKCS#8 PEM, mode 0600; encrypted when passphrase is given) and <prefix>.pub
    (SubjectPublicKeyInfo PEM)."""
    key_path, pub_path = key_paths(prefix, force)
    private = Ed25519PrivateKey.generate()
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase is not None
           else serialization.NoEncryption())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pub = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        if force and key_path.exists():
            key_path.unlink()
        # O_EXCL + 0600 at creation: the private key is never readable by others, not even briefly.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        pub_path.write_bytes(pub)
    except OSError as e:
        raise TrustError(f"cannot write key files: {e}") from None
    return key_path, pub_path


def key_paths(prefix, force: bool = False) -> tuple[pathlib.Path, pathlib.Path]:
    """(<prefix>.key, <prefix>.pub); TrustError when either exists and not force (checked before any
    passphrase is asked for)."""
    prefix = pathlib.Path(prefix)
    key_path, pub_path = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for p in (key_path, pub_path):
        if p.exists() and not force:
            raise TrustError(f"{p} exists; refusing to overwrite a key (use --force)")
    return key_path, pub_path


def _read(path, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as e:
        raise TrustError(f"cannot read {what} {path}: {e.strerror or e}") from None


def is_encrypted_key(data: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data


def load_private_key(path, passphrase_file=None) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, encrypted or not) or 32 raw seed bytes. An encrypted
    key's passphrase comes from passphrase_file, else $ELK_KEY_PASSPHRASE, else a terminal prompt."""
    data = _read(path, "private key")
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    if b"PUBLIC KEY" in data:
        raise TrustError(f"{path}: this is a public key; signing needs the private key (.key)")
    password = None
    if is_encrypted_key(data):
        password = _passphrase_to_load(path, passphrase_file)
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as e:
        if password is not None:
            raise TrustError(f"{path}: wrong passphrase (or a damaged key file)") from None
        raise TrustError(f"{path}: not an Ed25519 private key ({str(e).splitlines()[0]})") from None
    except Exception as e:  # cryptography raises its own types for unsupported encryption schemes
        raise TrustError(f"{path}: cannot read the private key ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(f"{path}: key is {type(key).__name__.lstrip('_')}, not Ed25519")
    return key


def _passphrase_to_load(path, passphrase_file) -> bytes:
    if passphrase_file:
        return _passphrase_file(passphrase_file)
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode("utf-8")
    if _stdin_is_tty():
        pw = _prompt(f"Passphrase for {path}: ")
        if pw:
            return pw
        raise TrustError(f"{path}: empty passphrase; the key is encrypted")
    raise TrustError(f"{path}: the private key is encrypted; set {PASSPHRASE_ENV}, pass --passphrase-file "
                     "FILE, or run on a terminal to be asked")


def load_public_key(path) -> bytes:
    """The 32 raw bytes of an Ed25519 public key read from PEM or a 32-byte raw file."""
    data = _read(path, "public key")
    if len(data) == 32:
        return data
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        if b"PRIVATE KEY" in data:
            raise TrustError(f"{path}: this is a private key; pass the .pub file") from None
        raise TrustError(f"{path}: not an Ed25519 public key (PEM or 32 raw bytes)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError(f"{path}: key is {type(key).__name__.lstrip('_')}, not Ed25519")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: bytes) -> bytes:
    """First 8 bytes of SHA-256(raw public key): names a key in messages and in the trailer."""
    return hashlib.sha256(public_key).digest()[: spec.TRUST_KEY_ID_SIZE]


# ---------------------------------------------------------------------------------------------
# Trailer: u32 magic "ELKT", u32 total bytes, then TLVs (u16 type, u16 reserved, u32 length, value)


def encode_trailer(records: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HHI", t, 0, len(v)) + v for t, v in records)
    return struct.pack("<II", spec.TRAILER_MAGIC, spec.TRAILER_HEAD_SIZE + len(body)) + body


def decode_trailer(data: bytes) -> dict[int, bytes]:
    """TLV type -> value for a trailer occupying exactly `data`. Unknown types are kept, never trusted."""
    if len(data) < spec.TRAILER_HEAD_SIZE:
        raise TrustError(f"trailer: {len(data)} bytes after the image, need at least {spec.TRAILER_HEAD_SIZE}")
    magic, total = struct.unpack_from("<II", data)
    if magic != spec.TRAILER_MAGIC:
        raise TrustError(f"trailer: bad magic 0x{magic:08x} (expected 'ELKT')")
    if total < spec.TRAILER_HEAD_SIZE or total > spec.TRAILER_MAX_SIZE:
        raise TrustError(f"trailer: total size {total} outside [{spec.TRAILER_HEAD_SIZE}, {spec.TRAILER_MAX_SIZE}]")
    if total != len(data):
        raise TrustError(f"trailer: says {total} bytes but {len(data)} follow the image")
    out, pos = {}, spec.TRAILER_HEAD_SIZE
    while pos < total:
        if total - pos < spec.TRAILER_TLV_HEAD_SIZE:
            raise TrustError(f"trailer: record head at +{pos} cut short")
        t, reserved, length = struct.unpack_from("<HHI", data, pos)
        pos += spec.TRAILER_TLV_HEAD_SIZE
        if length > total - pos:
            raise TrustError(f"trailer: record type {t} length {length} runs past the trailer end")
        if reserved != 0:
            raise TrustError(f"trailer: record type {t} has non-zero reserved field")
        if t in out:
            raise TrustError(f"trailer: duplicate record type {t}")
        if t in TLV_SIZES and length != TLV_SIZES[t]:
            raise TrustError(f"trailer: {TLV_NAMES[t]} record is {length} bytes, expected {TLV_SIZES[t]}")
        out[t] = data[pos:pos + length]
        pos += length
    return out


# ---------------------------------------------------------------------------------------------
# Images: just the header fields signing needs (elk.image does the full structural check)


@dataclasses.dataclass
class Header:
    header_size: int
    flags: int
    image_size: int
    security_counter: int
    payload_sha256: bytes


def _u32(b: bytes, name: str) -> int:
    return struct.unpack_from("<I", b, OFF[name])[0]


def _u64(b: bytes, name: str) -> int:
    return struct.unpack_from("<Q", b, OFF[name])[0]


def read_header(data: bytes) -> Header:
    """Magic, header size, CRC and image_size bounds; TrustError naming the first that fails."""
    if len(data) < HDR:
        raise TrustError(f"file is {len(data)} bytes, shorter than an image header ({HDR})")
    if _u32(data, "magic") != spec.IMAGE_MAGIC:
        raise TrustError("not an elk image (bad magic)")
    hsize = struct.unpack_from("<H", data, OFF["header_size"])[0]
    if hsize < HDR or hsize > len(data) or hsize % 4:
        raise TrustError(f"header_size {hsize} invalid")
    want, have = zlib.crc32(data[: hsize - 4]), struct.unpack_from("<I", data, hsize - 4)[0]
    if want != have:
        raise TrustError(f"header CRC mismatch (stored 0x{have:08x}, computed 0x{want:08x})")
    image_size = _u64(data, "image_size")
    if image_size < hsize or image_size > len(data):
        raise TrustError(f"image_size {image_size} outside the file ({len(data)} bytes)")
    return Header(hsize, _u32(data, "flags"), image_size, _u32(data, "security_counter"),
                  bytes(data[OFF["payload_sha256"]:OFF["payload_sha256"] + 32]))


def payload_hash_ok(data: bytes) -> bool:
    po, ps = _u64(data, "payload_offset"), _u64(data, "payload_size")
    if po + ps > len(data):
        return False
    return hashlib.sha256(data[po:po + ps]).digest() == data[OFF["payload_sha256"]:OFF["payload_sha256"] + 32]


def image_digest(data: bytes, image_size: int) -> bytes:
    """SHA-256 of bytes [0, image_size): the header (flags and security counter included) + payload."""
    return hashlib.sha256(memoryview(data)[:image_size]).digest()


def _set_header(data: bytearray, flags: int, security_counter: int | None) -> None:
    struct.pack_into("<I", data, OFF["flags"], flags)
    if security_counter is not None:
        if not 0 <= security_counter <= 0xFFFFFFFF:
            raise TrustError(f"security counter {security_counter} outside 0 … 4294967295")
        struct.pack_into("<I", data, OFF["security_counter"], security_counter)
    hsize = struct.unpack_from("<H", data, OFF["header_size"])[0]
    struct.pack_into("<I", data, hsize - 4, zlib.crc32(data[: hsize - 4]))


def sign_bytes(data: bytes, private: Ed25519PrivateKey, security_counter: int | None = None) -> bytes:
    """The image with its header flag bit 0 set (and counter), CRC redone and a fresh trailer."""
    hdr = read_header(data)
    if not payload_hash_ok(data):
        raise TrustError("payload SHA-256 does not match the header; refusing to sign a damaged image")
    out = bytearray(data[: hdr.image_size])  # any old trailer is dropped: re-signing replaces it
    _set_header(out, hdr.flags | spec.IMAGE_FLAG_HAS_TRAILER, security_counter)
    digest = image_digest(out, hdr.image_size)
    sig = private.sign(spec.SIGN_CONTEXT_IMAGE + digest)
    pub = public_bytes(private)
    return bytes(out) + encode_trailer([(TLV["KEY_ID"], key_id(pub)), (TLV["IMAGE_SHA256"], digest),
                                        (TLV["ED25519"], sig)])


def sign_file(path, key, security_counter: int | None = None, out_path=None) -> pathlib.Path:
    """Sign an image file in place (or into out_path); written through a temporary file + rename.
    key: an Ed25519PrivateKey, or the path of a private key file (read with load_private_key)."""
    private = key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)
    data = _read(path, "image")
    signed = sign_bytes(data, private, security_counter)
    dest = pathlib.Path(out_path or path)
    tmp = dest.with_name(dest.name + ".signing")
    try:
        tmp.write_bytes(signed)
        os.replace(tmp, dest)
    except OSError as e:
        raise TrustError(f"cannot write {dest}: {e.strerror or e}") from None
    return dest


# ---------------------------------------------------------------------------------------------
# Verification: one finding per failed check, in the board's order


@dataclasses.dataclass
class Finding:
    check: str   # "crc", "hash", "trailer", "digest", "key", "signature", "rollback"
    ok: bool
    detail: str


def check_signature(data: bytes, hdr: Header, owner_key: bytes | None,
                    security_floor: int = 0) -> list[Finding]:
    """Signature checks on an image whose header already passed read_header.

    owner_key None: report what the trailer holds without checking the signature."""
    found = []
    if not hdr.flags & spec.IMAGE_FLAG_HAS_TRAILER:
        if len(data) > hdr.image_size:
            found.append(Finding("trailer", False, f"{len(data) - hdr.image_size} bytes follow the image "
                                 "but header flag bit 0 (trailer) is clear"))
        if owner_key is not None:
            found.append(Finding("signature", False, "image is not signed (header flag bit 0 clear)"))
        else:
            found.append(Finding("signature", True, "unsigned (no trailer)"))
        return found + _rollback(hdr, security_floor)
    try:
        tlv = decode_trailer(data[hdr.image_size:])
    except TrustError as e:
        return found + [Finding("trailer", False, str(e))] + _rollback(hdr, security_floor)
    digest = image_digest(data, hdr.image_size)
    if TLV["IMAGE_SHA256"] in tlv and tlv[TLV["IMAGE_SHA256"]] != digest:
        found.append(Finding("digest", False, "image bytes changed after signing (SHA-256 of header+payload "
                             "differs from the one in the trailer)"))
    sig = tlv.get(TLV["ED25519"])
    if sig is None:
        found.append(Finding("signature", False, "trailer holds no Ed25519 signature record"))
    elif owner_key is None:
        kid = tlv.get(TLV["KEY_ID"], b"").hex() or "unknown"
        found.append(Finding("signature", True, f"signed by key {kid} (not checked: no --key given)"))
    else:
        if TLV["KEY_ID"] in tlv and tlv[TLV["KEY_ID"]] != key_id(owner_key):
            found.append(Finding("key", False, f"signed by key {tlv[TLV['KEY_ID']].hex()}, "
                                 f"expected key {key_id(owner_key).hex()}"))
        try:
            Ed25519PublicKey.from_public_bytes(owner_key).verify(sig, spec.SIGN_CONTEXT_IMAGE + digest)
            found.append(Finding("signature", True, f"valid Ed25519 signature by key {key_id(owner_key).hex()}"))
        except InvalidSignature:
            found.append(Finding("signature", False, f"Ed25519 signature does not verify with key "
                                 f"{key_id(owner_key).hex()}"))
    return found + _rollback(hdr, security_floor)


def _rollback(hdr: Header, floor: int) -> list[Finding]:
    if hdr.security_counter < floor:
        return [Finding("rollback", False, f"security counter {hdr.security_counter} is lower than {floor}")]
    return []


def verify_bytes(data: bytes, owner_key: bytes | None = None, security_floor: int = 0) -> list[Finding]:
    """Header CRC, payload hash, trailer and signature findings for a whole image file."""
    try:
        hdr = read_header(data)
    except TrustError as e:
        return [Finding("header", False, str(e))]
    found = [Finding("crc", True, "header CRC ok")]
    if payload_hash_ok(data):
        found.append(Finding("hash", True, "payload SHA-256 ok"))
    else:
        found.append(Finding("hash", False, "payload SHA-256 does not match the header (payload changed)"))
    return found + check_signature(data, hdr, owner_key, security_floor)


def _map(path):
    """The file mapped read-only (a 600 MB image is hashed without copying it into memory)."""
    import mmap

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise TrustError(f"cannot read image {path}: {e.strerror or e}") from None


def verify_file(path, key_path=None) -> list[Finding]:
    owner = load_public_key(key_path) if key_path else None
    return verify_bytes(_map(path), owner)


SIGNATURE_PARTS = {"trailer": "trailer", "digest": "signed digest", "key": "signing key",
                   "signature": "signature", "rollback": "security counter"}


def extend_report(report, path, key_path=None) -> None:
    """Add the trailer/signature checks to an elk.image.VerifyReport (`elk verify [--key owner.pub]`).

    The header and payload checks are the report's own; a header that fails them adds nothing here."""
    owner = load_public_key(key_path) if key_path else None
    data = _map(path)
    try:
        hdr = read_header(data)
    except TrustError:
        return
    for f in check_signature(data, hdr, owner):
        report.add(SIGNATURE_PARTS[f.check], f.ok, f.detail)


# ---------------------------------------------------------------------------------------------
# Provisioning record (the board keeps two slots; see docs/trust.md) and re-provisioning requests

PROV_OFF = {name: off for name, off, _ in spec.PROV_FIELDS}


@dataclasses.dataclass
class ProvRecord:
    sequence: int = 0           # 0: no valid record (factory state)
    flags: int = 0              # PROV_FLAG_OWNER_KEY: owner_key is set
    owner_key: bytes = bytes(32)
    security_floor: int = 0
    challenge_counter: int = 0  # boards without an RNG: next challenge counter (docs/trust.md)

    @property
    def owned(self) -> bool:
        return bool(self.sequence and self.flags & spec.PROV_FLAG_OWNER_KEY)


def encode_prov(rec: ProvRecord) -> bytes:
    out = bytearray(spec.PROV_RECORD_SIZE)
    struct.pack_into("<IHHII", out, 0, spec.PROV_MAGIC, spec.PROV_VERSION, spec.PROV_RECORD_SIZE,
                     rec.sequence, rec.flags)
    out[PROV_OFF["owner_key"]:PROV_OFF["owner_key"] + 32] = rec.owner_key
    struct.pack_into("<I", out, PROV_OFF["security_floor"], rec.security_floor)
    struct.pack_into("<I", out, PROV_OFF["challenge_counter"], rec.challenge_counter)
    struct.pack_into("<I", out, PROV_OFF["crc32"], zlib.crc32(out[: PROV_OFF["crc32"]]))
    return bytes(out)


def decode_prov(slot: bytes) -> ProvRecord | None:
    """The record in one slot, or None when the slot is erased, torn or foreign."""
    if len(slot) < spec.PROV_RECORD_SIZE:
        return None
    magic, version, size, seq, flags = struct.unpack_from("<IHHII", slot)
    if (magic, version, size) != (spec.PROV_MAGIC, spec.PROV_VERSION, spec.PROV_RECORD_SIZE) or seq == 0:
        return None
    if zlib.crc32(slot[: PROV_OFF["crc32"]]) != struct.unpack_from("<I", slot, PROV_OFF["crc32"])[0]:
        return None
    floor = struct.unpack_from("<I", slot, PROV_OFF["security_floor"])[0]
    counter = struct.unpack_from("<I", slot, PROV_OFF["challenge_counter"])[0]
    return ProvRecord(seq, flags, bytes(slot[PROV_OFF["owner_key"]:PROV_OFF["owner_key"] + 32]), floor, counter)


def select_prov(slot0: bytes, slot1: bytes) -> tuple[ProvRecord, int]:
    """(newest valid record, its slot) or (empty record, -1): the same rule as elk_trust_prov_select."""
    a, b = decode_prov(slot0), decode_prov(slot1)
    if a and (not b or a.sequence > b.sequence):
        return a, 0
    if b:
        return b, 1
    return ProvRecord(), -1


def provision_message(new_key: bytes, sequence: int, flags: int, nonce: bytes) -> bytes:
    if len(nonce) != spec.TRUST_NONCE_SIZE:
        raise TrustError(f"board challenge is {len(nonce)} bytes, expected {spec.TRUST_NONCE_SIZE}")
    return spec.SIGN_CONTEXT_PROVISION + new_key + struct.pack("<II", sequence, flags) + nonce


def sign_provision_request(old_private: Ed25519PrivateKey, new_key: bytes, sequence: int, flags: int,
                           nonce: bytes) -> bytes:
    """Ed25519 signature by the current owner authorizing record `sequence` with new_key/flags on the
    one board whose current challenge (TRUST_INFO) is `nonce`."""
    return old_private.sign(provision_message(new_key, sequence, flags, nonce))
