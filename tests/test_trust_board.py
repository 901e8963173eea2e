"""Trust on an emulated board (build/host/elk-fw behind a real pty): provisioning, refusals that reach
the host with their reason, anti-rollback across restarts, re-provisioning, the physical reset, and
power loss (the firmware killed) while the provisioning record is written."""

import os
import random
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest
from conftest import ROOT, fixture_path, owner_keys, pack_stories260k

from elk import flash as flashing
from elk import provision, spec, trust
from elk.emulate import Emulator
from elk.link import LinkError, connect

OFF = {n: o for n, o, _ in spec.HEADER_FIELDS}
FLASH_MB = 8
ERASE = 4096  # boards/host.toml erase_block_kb = 4


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return pack_stories260k(tmp_path_factory.mktemp("img") / "s.elk", quant="q8_0").read_bytes()

    model = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    path = tmp_path_factory.mktemp("img") / "s.elk"
    image.write_image(path, model, quant="q8_0")
    return path.read_bytes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return owner_keys(tmp_path_factory.mktemp("keys"), ("a", "b"))


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def board(tmp_path, name="board.bin"):
    return Emulator("host", baud=0, flash=tmp_path / name, flash_mb=FLASH_MB,
                    log=open(tmp_path / "fw.log", "a"))


def flash_one(port, path):
    return flashing.flash([port], path, connect_baud=0, progress=False)[0]


def info(port):
    with connect(port, 0) as link:
        return provision.trust_info(link)


def provision_key(port, raw, old_priv=None):
    with connect(port, 0) as link:
        return provision.provision(link, raw, old_priv)[1]


def test_unsigned_image_on_unprovisioned_board_is_accepted_with_warning(host_build, plain, tmp_path):
    img = write(tmp_path, "u.elk", plain)
    with board(tmp_path) as emu:
        r = flash_one(emu.port, img)
        assert r.ok, r.error
        assert "no owner key" in r.warning and "warning" in r.summary()
        assert not info(emu.port).owned


def test_provisioned_board_refuses_unsigned_and_foreign_images_with_reason(host_build, plain, keys, tmp_path):
    unsigned = write(tmp_path, "u.elk", plain)
    foreign = write(tmp_path, "b.elk", trust.sign_bytes(plain, keys["b"]["priv"]))
    good = write(tmp_path, "a.elk", trust.sign_bytes(plain, keys["a"]["priv"]))
    kid_a, kid_b = trust.key_id(keys["a"]["raw"]).hex(), trust.key_id(keys["b"]["raw"]).hex()
    with board(tmp_path) as emu:
        after = provision_key(emu.port, keys["a"]["raw"])
        assert after.owned and after.key_id.hex() == kid_a
        r = flash_one(emu.port, unsigned)
        assert not r.ok and "ELK_E_AUTH" in r.error and "not signed" in r.error and kid_a in r.error
        r = flash_one(emu.port, foreign)
        assert not r.ok and "ELK_E_AUTH" in r.error and kid_b in r.error and kid_a in r.error
        r = flash_one(emu.port, good)
        assert r.ok and r.warning == "", r.error
        with connect(emu.port, 0) as link:
            slots = link.info().slots
        assert any(s.name.startswith("stories260K") and s.image_size == good.stat().st_size for s in slots)


def test_provisioned_board_does_not_report_its_running_unsigned_image_as_flashed(host_build, plain, keys, tmp_path):
    # The image committed before provisioning still runs until the next power-on. Flashing that same
    # unsigned image again must not be "OK, already runs it": the board will refuse it at the next boot.
    unsigned = write(tmp_path, "u.elk", plain)
    kid_a = trust.key_id(keys["a"]["raw"]).hex()
    with board(tmp_path) as emu:
        assert flash_one(emu.port, unsigned).ok
        provision_key(emu.port, keys["a"]["raw"])
        r = flash_one(emu.port, unsigned)
        assert not r.ok and not r.up_to_date
        assert "not signed" in r.error and kid_a in r.error and "power-on" in r.error
        good = write(tmp_path, "a.elk", trust.sign_bytes(plain, keys["a"]["priv"]))
        assert flash_one(emu.port, good).ok
        r = flash_one(emu.port, good)  # a signed image the board runs is still "nothing sent"
        assert r.ok and r.up_to_date, r.error


def test_provisioned_board_refuses_tampered_images(host_build, plain, keys, tmp_path):
    signed = trust.sign_bytes(plain, keys["a"]["priv"], security_counter=1)
    payload_flip = bytearray(signed)
    payload_flip[len(plain) // 2] ^= 0x01
    header = bytearray(signed)  # counter raised and CRC fixed: only the signature can tell
    struct.pack_into("<I", header, OFF["security_counter"], 9)
    struct.pack_into("<I", header, 252, zlib.crc32(header[:252]))
    with board(tmp_path) as emu:
        provision_key(emu.port, keys["a"]["raw"])
        r = flash_one(emu.port, write(tmp_path, "p.elk", bytes(payload_flip)))
        # the payload hash catches it before the signature check, and the host reports the board's own
        # reason (not ELK_E_STATE from a FLASH_END resent after the board closed the session)
        assert not r.ok and "ELK_E_HASH" in r.error and "payload" in r.error and "ELK_E_STATE" not in r.error, r.error
        r = flash_one(emu.port, write(tmp_path, "h.elk", bytes(header)))
        assert not r.ok and "ELK_E_AUTH" in r.error and "changed after signing" in r.error
        assert info(emu.port).running_counter == 0  # nothing was committed


def test_downgrade_is_refused_and_the_floor_survives_a_restart(host_build, plain, keys, tmp_path):
    v5 = write(tmp_path, "v5.elk", trust.sign_bytes(plain, keys["a"]["priv"], security_counter=5))
    v4 = write(tmp_path, "v4.elk", trust.sign_bytes(plain, keys["a"]["priv"], security_counter=4))
    v6 = write(tmp_path, "v6.elk", trust.sign_bytes(plain, keys["a"]["priv"], security_counter=6))
    with board(tmp_path) as emu:
        provision_key(emu.port, keys["a"]["raw"])
        assert flash_one(emu.port, v5).ok
        t = info(emu.port)
        assert (t.running_counter, t.security_floor) == (5, 5)
        r = flash_one(emu.port, v4)
        assert not r.ok and "ELK_E_ROLLBACK" in r.error and "4 is lower than the board's 5" in r.error
    with board(tmp_path) as emu:  # power cycle: the floor is in flash, not in RAM
        assert info(emu.port).security_floor == 5
        assert not flash_one(emu.port, v4).ok
        assert flash_one(emu.port, v6).ok
        with connect(emu.port, 0) as link:  # the previous slot holds v5: ROLLBACK would go below 6
            with pytest.raises(LinkError, match="ELK_E_ROLLBACK"):
                link.request(0x32)


def test_counter_raised_before_provisioning_does_not_lock_out_the_owner(host_build, plain, keys, tmp_path):
    """Before an owner exists anyone on the port may commit an image with security counter 2^32-16 (the
    counter is only CRC-protected there). That unauthenticated floor must not follow the board into
    ownership: the owner's signed v5 is accepted, and from then on the floor protects v5."""
    high = bytearray(plain)
    struct.pack_into("<I", high, OFF["security_counter"], 0xFFFFFFF0)
    struct.pack_into("<I", high, 252, zlib.crc32(high[:252]))
    v5 = write(tmp_path, "v5.elk", trust.sign_bytes(plain, keys["a"]["priv"], security_counter=5))
    v4 = write(tmp_path, "v4.elk", trust.sign_bytes(plain, keys["a"]["priv"], security_counter=4))
    with board(tmp_path) as emu:
        assert flash_one(emu.port, write(tmp_path, "high.elk", bytes(high))).ok
        provision_key(emu.port, keys["a"]["raw"])
        assert info(emu.port).security_floor == 0
        r = flash_one(emu.port, v5)
        assert r.ok, r.error
        assert "ELK_E_ROLLBACK" in flash_one(emu.port, v4).error
    with board(tmp_path) as emu:
        t = info(emu.port)
        assert t.security_floor == 5 and t.running_counter == 5, t
        assert "ELK_E_ROLLBACK" in flash_one(emu.port, v4).error


def test_reprovisioning_needs_the_old_key(host_build, plain, keys, tmp_path):
    by_b = write(tmp_path, "b.elk", trust.sign_bytes(plain, keys["b"]["priv"]))
    with board(tmp_path) as emu:
        provision_key(emu.port, keys["a"]["raw"])
        with connect(emu.port, 0) as link:
            with pytest.raises(provision.ProvisionError, match="--old-key"):
                provision.provision(link, keys["b"]["raw"])
            with pytest.raises(provision.ProvisionError, match="owner key is"):
                provision.provision(link, keys["b"]["raw"], keys["b"]["priv"])
            # bypass the host-side checks: the board itself refuses an unsigned / wrongly signed request
            with pytest.raises(LinkError, match="ELK_E_AUTH.*signed by it"):
                link.request(0x51, struct.pack("<I", 1) + keys["b"]["raw"])
            forged = trust.sign_provision_request(keys["b"]["priv"], keys["b"]["raw"], 2, 1,
                                                  provision.trust_info(link).nonce)
            with pytest.raises(LinkError, match="ELK_E_AUTH"):
                link.request(0x51, struct.pack("<I", 1) + keys["b"]["raw"] + forged)
        assert not flash_one(emu.port, by_b).ok
        after = provision_key(emu.port, keys["b"]["raw"], keys["a"]["priv"])
        assert after.key_id == trust.key_id(keys["b"]["raw"]) and after.sequence == 2
        assert flash_one(emu.port, by_b).ok


def test_reprovisioning_request_for_one_board_is_refused_by_another_of_the_same_owner(host_build, keys, tmp_path):
    """Two boards of one owner at the same record sequence: a 'clear the owner key' request captured on
    the line to board 1 must not clear board 2 (it would then take unsigned images)."""
    with board(tmp_path, "one.bin") as one, board(tmp_path, "two.bin") as two:
        provision_key(one.port, keys["a"]["raw"])
        provision_key(two.port, keys["a"]["raw"])
        assert info(one.port).sequence == info(two.port).sequence
        sent = []
        with connect(one.port, 0) as link:
            real = link.request

            def spy(cmd, payload=b"", **kw):
                if cmd == 0x51:
                    sent.append(bytes(payload))
                return real(cmd, payload, **kw)

            link.request = spy
            provision.provision(link, None, keys["a"]["priv"])  # board 1: owner cleared, by its owner
        assert not info(one.port).owned and len(sent) == 1 and len(sent[0]) == 100
        with connect(two.port, 0) as link:
            with pytest.raises(LinkError, match="ELK_E_AUTH"):
                link.request(0x51, sent[0])
        assert info(two.port).owned and info(two.port).owner_key == keys["a"]["raw"]


def run_elk(*args):
    return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "host")})


def test_cli_provision_status_and_factory_reset_of_a_stopped_board(host_build, plain, keys, tmp_path):
    unsigned = write(tmp_path, "u.elk", plain)
    with board(tmp_path) as emu:
        r = run_elk("provision", "--port", emu.port, "--key", keys["a"]["pub"], "--baud", "0")
        assert r.returncode == 0 and trust.key_id(keys["a"]["raw"]).hex() in r.stdout, r.stderr
        r = run_elk("provision", "--port", emu.port, "--key", keys["b"]["pub"], "--baud", "0")
        assert r.returncode == 2 and r.stderr.startswith("elk: error:") and "--old-key" in r.stderr
        r = run_elk("flash", unsigned, "--port", emu.port, "--connect-baud", "0", "--quiet")
        assert r.returncode == 2 and "not signed" in r.stderr and "Traceback" not in r.stderr
    r = run_elk("provision", "--factory-reset", tmp_path / "board.bin", "--board", "host")
    assert r.returncode == 0, r.stderr
    with board(tmp_path) as emu:
        r = run_elk("provision", "--port", emu.port, "--status", "--baud", "0")
        assert r.returncode == 0 and "no owner key" in r.stdout
        assert flash_one(emu.port, unsigned).ok


def test_factory_reset_refuses_the_flash_file_of_a_running_board(host_build, keys, tmp_path):
    # the reset is for a STOPPED board: under a running one it would be undone (or torn) by the board's
    # next record write, and the board would keep enforcing its in-memory owner key meanwhile
    with board(tmp_path) as emu:
        provision_key(emu.port, keys["a"]["raw"])
        before = (tmp_path / "board.bin").read_bytes()[:2 * ERASE]
        r = run_elk("provision", "--factory-reset", tmp_path / "board.bin", "--board", "host")
        assert r.returncode == 2 and r.stderr.startswith("elk: error:") and "in use" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert (tmp_path / "board.bin").read_bytes()[:2 * ERASE] == before
        assert info(emu.port).owned
    assert run_elk("provision", "--factory-reset", tmp_path / "board.bin", "--board", "host").returncode == 0


# ---------------------------------------------------------------------------------------------
# Power loss while the provisioning record is written


def prov_copies(path):
    data = path.read_bytes()[:2 * ERASE]
    return [data[i * ERASE + 256:i * ERASE + 256 + spec.PROV_RECORD_SIZE] for i in range(2)]


def test_torn_provisioning_write_leaves_the_old_owner_at_every_cut_point(host_build, plain, keys, tmp_path):
    """Snapshot the flash before and after re-provisioning A -> B, then rebuild the target boot block as
    a power cut would leave it after k programmed bytes (erase first, then bytes in order) and boot it."""
    img = write(tmp_path, "a.elk", trust.sign_bytes(plain, keys["a"]["priv"]))
    flash_file = tmp_path / "board.bin"
    with board(tmp_path) as emu:
        provision_key(emu.port, keys["a"]["raw"])
        assert flash_one(emu.port, img).ok
    before = flash_file.read_bytes()[:2 * ERASE]
    with board(tmp_path) as emu:
        provision_key(emu.port, keys["b"]["raw"], keys["a"]["priv"])
    after = flash_file.read_bytes()[:2 * ERASE]
    target = [i for i in range(2) if before[i * ERASE:(i + 1) * ERASE] != after[i * ERASE:(i + 1) * ERASE]]
    assert len(target) == 1  # exactly one boot block was rewritten; the other still holds the old state
    t = target[0] * ERASE
    # programming order inside the block: provisioning copy [256, 384) first, then the boot record [0, 256)
    order = list(range(256, 384)) + list(range(0, 256))
    for k in (0, 1, 64, 127, 128, 129, 200, 255, 383, 384):
        torn = bytearray(before)
        torn[t:t + ERASE] = b"\xff" * ERASE
        for pos in order[:k]:
            torn[t + pos] = after[t + pos]
        with open(flash_file, "r+b") as f:
            f.write(torn)
        with board(tmp_path) as emu:
            ti = info(emu.port)
            with connect(emu.port, 0) as link:
                running = link.info()
        owner = "b" if k == len(order) else ("a" if k < 128 else None)
        if owner:
            assert ti.owned and ti.owner_key == keys[owner]["raw"], (k, ti)
        else:  # provisioning copy complete, boot record torn: either key is a consistent state
            assert ti.owned and ti.owner_key in (keys["a"]["raw"], keys["b"]["raw"]), (k, ti)
        if ti.owner_key == keys["a"]["raw"]:
            assert running.running in (0, 1) and running.slots[running.running].valid, k  # still boots its image
        else:  # secure boot: under owner B the image signed by A is kept but not run, and INFO says why
            assert running.running == 255 and "not signed by the owner key" in running.boot_error, k


def test_board_killed_during_provisioning_boots_with_old_or_new_owner(host_build, plain, keys, tmp_path):
    img = write(tmp_path, "a.elk", trust.sign_bytes(plain, keys["a"]["priv"]))
    with board(tmp_path) as emu:
        provision_key(emu.port, keys["a"]["raw"])
        assert flash_one(emu.port, img).ok
    rng = random.Random(5)
    # Each restart must find exactly one consistent owner whose rule the boot obeys (asserted below);
    # which owner depends on where the kill landed, so no outcome is required.
    for attempt in range(6):
        with board(tmp_path) as emu:
            cur = info(emu.port)
            old_priv = keys["a"]["priv"] if cur.owner_key == keys["a"]["raw"] else keys["b"]["priv"]
            new = keys["b"]["raw"] if cur.owner_key == keys["a"]["raw"] else keys["a"]["raw"]
            link = connect(emu.port, 0)
            th = threading.Thread(target=lambda: _try(provision.provision, link, new, old_priv), daemon=True)
            th.start()
            time.sleep(rng.uniform(0.0, 0.004))
            emu.kill()  # power cut somewhere around the record write
            th.join(timeout=10)
            link.close()
        with board(tmp_path) as emu:
            t = info(emu.port)
            assert t.owned and t.owner_key in (keys["a"]["raw"], keys["b"]["raw"]), t
            with connect(emu.port, 0) as link2:
                i = link2.info()
            if t.owner_key == keys["a"]["raw"]:
                assert i.running in (0, 1)  # the committed image (signed by A) boots
            else:  # re-provisioned to B: the image signed by A no longer boots (secure boot)
                assert i.running == 255 and "not signed by the owner key" in i.boot_error, i


def _try(fn, *args):
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the board dies under the request on purpose
        pass


@pytest.mark.parametrize("board_name", ["qemu-a7", "qemu-a76"])
def test_trust_checks_on_cross_built_arm_firmware_under_qemu(host_build, plain, keys, tmp_path, board_name):
    """The same C cross-built and linked against Debian's armhf / arm64 libsodium (qemu-arm cortex-a7:
    32-bit size_t; qemu-aarch64 cortex-a76)."""
    from elk import boards, emulate

    emulate.build(boards.load(board_name))  # a no-op when up to date; never run a stale elk-fw
    signed = write(tmp_path, "a.elk", trust.sign_bytes(plain, keys["a"]["priv"], security_counter=2))
    older = write(tmp_path, "a1.elk", trust.sign_bytes(plain, keys["a"]["priv"], security_counter=1))
    foreign = write(tmp_path, "b.elk", trust.sign_bytes(plain, keys["b"]["priv"], security_counter=3))
    with Emulator(board_name, baud=0, flash=tmp_path / "arm.bin", flash_mb=FLASH_MB,
                  log=open(tmp_path / "fw.log", "a")) as emu:
        provision_key(emu.port, keys["a"]["raw"])
        assert "ELK_E_AUTH" in flash_one(emu.port, foreign).error
        assert flash_one(emu.port, signed).ok
        assert "ELK_E_ROLLBACK" in flash_one(emu.port, older).error
        assert info(emu.port).running_counter == 2
    with Emulator(board_name, baud=0, flash=tmp_path / "arm.bin", flash_mb=FLASH_MB,
                  log=open(tmp_path / "fw.log", "a")) as emu:  # power-on: secure boot runs the signed image
        with connect(emu.port, 0) as link:
            i = link.info()
        assert i.running in (0, 1) and not i.boot_error, i
