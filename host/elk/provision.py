"""Owner-key provisioning of a board over the serial link (TRUST_INFO, PROVISION; docs/trust.md), and
the physical reset of an emulated board's provisioning area in its flash file.

Not here: the record format and signatures (elk.trust), the protocol client (elk.link).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import struct

from elk import proto_spec, spec, trust
from elk.errors import ElkError

CMD = proto_spec.COMMANDS


class ProvisionError(ElkError):
    pass


@dataclasses.dataclass
class TrustInfo:
    sequence: int
    flags: int
    security_floor: int
    running_counter: int
    owner_key: bytes
    key_id: bytes
    nonce: bytes = b""  # the board's challenge a re-provisioning request signs (new after each PROVISION)
    note: str = ""  # the board's warning in its PROVISION reply (e.g. the committed image will not boot)

    @property
    def owned(self) -> bool:
        return bool(self.sequence and self.flags & spec.PROV_FLAG_OWNER_KEY)

    def summary(self) -> str:
        who = f"owner key {self.key_id.hex()}" if self.owned else "no owner key (accepts unsigned images)"
        return f"{who}, record {self.sequence}, security counter {self.running_counter} (floor {self.security_floor})"


def trust_info(link) -> TrustInfo:
    r = link.request(CMD["TRUST_INFO"])
    if len(r) < 16 + 32 + 8 + spec.TRUST_NONCE_SIZE:
        raise ProvisionError(f"{link.port}: TRUST_INFO reply too short ({len(r)} bytes)")
    seq, flags, floor, running = struct.unpack_from("<IIII", r)
    return TrustInfo(seq, flags, floor, running, bytes(r[16:48]), bytes(r[48:56]),
                     bytes(r[56:56 + spec.TRUST_NONCE_SIZE]))


def provision(link, new_key: bytes | None, old_private=None) -> tuple[TrustInfo, TrustInfo]:
    """Store new_key (None: clear the owner key) on the board; old_private signs the request when the
    board already has an owner. Returns (before, after)."""
    before = trust_info(link)
    flags = spec.PROV_FLAG_OWNER_KEY if new_key is not None else 0
    key = new_key if new_key is not None else bytes(32)
    payload = struct.pack("<I", flags) + key
    if before.owned:
        if old_private is None:
            raise ProvisionError(f"{link.port}: board already has owner key {before.key_id.hex()}; pass "
                                 "--old-key with its private key (or reset the board's provisioning area)")
        if trust.public_bytes(old_private) != before.owner_key:
            raise ProvisionError(f"{link.port}: --old-key is key {trust.key_id(trust.public_bytes(old_private)).hex()}"
                                 f", the board's owner key is {before.key_id.hex()}")
        payload += trust.sign_provision_request(old_private, key, before.sequence + 1, flags, before.nonce)
    # the board checks the committed image under the new record (a hash of the slot: ~5 s per GB)
    r = link.request(CMD["PROVISION"], payload, extra_time=2.0 + link.info().slot_size / 200e6)
    after = trust_info(link)
    after.note = bytes(r[12:]).decode("utf-8", "replace")
    return before, after


def provision_port(port: str, key_path, old_key=None, clear: bool = False, baud=None,
                   passphrase_file=None) -> tuple[str, str]:
    """`elk provision`: returns (message, warning or "")."""
    from elk import link as elk_link

    if clear and key_path:
        raise ProvisionError("pass either --key (new owner) or --clear, not both")
    if not clear and not key_path:
        raise ProvisionError("pass --key owner.pub (or --clear with --old-key)")
    new_key = None if clear else trust.load_public_key(key_path)
    old_private = trust.load_private_key(old_key, passphrase_file) if old_key else None
    with elk_link.connect(port, baud or 115200) as lnk:
        before, after = provision(lnk, new_key, old_private)
    warning = after.note if after.owned else "board has no owner key: it accepts unsigned images"
    verb = "cleared the owner key" if clear else f"owner key {after.key_id.hex()} stored"
    was = f" (was {before.key_id.hex()})" if before.owned else ""
    return f"{port}: {verb}{was}; record {after.sequence}; board now {after.summary()}", warning


def status_port(port: str, baud=None) -> str:
    from elk import link as elk_link

    with elk_link.connect(port, baud or 115200) as lnk:
        return f"{port}: {trust_info(lnk).summary()}"


def _not_in_use(f, path) -> None:
    """elk-fw holds an flock on its flash file while it runs: the reset is for a stopped board only."""
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when f closes
    except OSError:
        raise ProvisionError(f"{path}: flash file in use by a running emulated board; stop it first "
                             "(the reset is the physical procedure for a board that is off)") from None


def factory_reset_flash(flash_file, erase_kb: int) -> str:
    """Physical reset of an emulated board (stopped): erase both provisioning copies in its flash file.

    The copies sit at offset ELK_BOOT_RECORD_SIZE of flash blocks 0 and 1 (beside the boot record copies,
    which stay, so the board keeps its images). Erased flash reads 0xFF: the board starts unprovisioned
    and with security floor 0."""
    path = pathlib.Path(flash_file)
    block = erase_kb * 1024
    try:
        size = path.stat().st_size
        if size < 2 * block:
            raise ProvisionError(f"{path}: {size} bytes, smaller than two {erase_kb} KiB boot blocks")
        with open(path, "r+b") as f:
            _not_in_use(f, path)
            for i in range(2):
                f.seek(i * block + proto_spec.BOOT_RECORD_SIZE)
                f.write(b"\xff" * spec.PROV_RECORD_SIZE)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ProvisionError(f"{path}: {e.strerror or e}") from None
    return f"{path}: provisioning area erased (both copies); the board starts without an owner key"
