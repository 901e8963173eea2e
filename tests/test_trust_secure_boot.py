"""Secure boot on an emulated board (build/host/elk-fw behind a real pty): once provisioned, the board
checks the owner signature and the security floor of the slot it is about to run at power-on, at RESET
and when it falls back to the previous slot, not only when an image is flashed (docs/trust.md)."""

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, fixture_path

from elk import flash as flashing
from elk import provision, trust
from elk.emulate import Emulator
from elk.link import CMD, LinkError, connect

FLASH_MB = 8
ERASE = 4096  # boards/host.toml erase_block_kb = 4
NONE = 255


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    from elk import image
    from elk.convert import load_model

    model = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    path = tmp_path_factory.mktemp("img") / "s.elk"
    image.write_image(path, model, quant="q8_0")
    return path.read_bytes()


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    k, p = trust.keygen(d / "owner")
    return {"pub": p, "priv": trust.load_private_key(k), "raw": trust.load_public_key(p)}


def board(tmp_path):
    return Emulator("host", baud=0, flash=tmp_path / "board.bin", flash_mb=FLASH_MB,
                    log=open(tmp_path / "fw.log", "a"))


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def flash_one(port, path):
    return flashing.flash([port], path, connect_baud=0, progress=False)[0]


def board_info(port):
    with connect(port, 0) as link:
        return link.info()


def provision_key(port, raw):
    with connect(port, 0) as link:
        provision.provision(link, raw)


def run_elk(*args):
    return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "host")})


def test_image_committed_before_provisioning_does_not_boot_after_it(host_build, plain, owner, tmp_path):
    unsigned = write(tmp_path, "u.elk", plain)
    signed = write(tmp_path, "a.elk", trust.sign_bytes(plain, owner["priv"]))
    with board(tmp_path) as emu:
        assert flash_one(emu.port, unsigned).ok
    with board(tmp_path) as emu:  # unprovisioned: the unsigned image keeps booting, as before
        i = board_info(emu.port)
        assert (i.active, i.running, i.boot_error) == (0, 0, "")
        r = run_elk("provision", "--port", emu.port, "--key", owner["pub"], "--baud", "0")
        assert r.returncode == 0 and r.stderr == ("elk: warning: the committed image (slot A) is not signed by the "
                                                  "new owner key: it will not start after the next power-on or "
                                                  "RESET\n"), r.stderr
        assert board_info(emu.port).running == 0  # the running model is not stopped by provisioning
    with board(tmp_path) as emu:  # power-on of a provisioned board
        i = board_info(emu.port)
        assert i.running == NONE and i.active == 0, i
        assert i.boot_error == "slot A: not signed by the owner key"
        r = run_elk("status", "--port", emu.port, "--baud", "0")
        assert r.returncode == 0 and "no model running: slot A: not signed by the owner key" in r.stdout
        for chat in (("-p", "hi"), ()):  # one-shot and interactive: one line with the board's reason
            r = run_elk("chat", "--port", emu.port, "--baud", "0", *chat)
            assert r.returncode == 2 and r.stderr.count("\n") == 1 and \
                "runs no model (slot A: not signed by the owner key)" in r.stderr, r.stderr
        # the same file is not "already running": it goes to the board, which refuses it with its reason
        r = run_elk("flash", unsigned, "--port", emu.port, "--connect-baud", "0", "--quiet")
        assert r.returncode == 2 and "already runs" not in r.stdout, r.stdout
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("elk: error:") and "ELK_E_AUTH" in err[0] \
            and "not signed" in err[0], r.stderr
        r = run_elk("flash", signed, "--port", emu.port, "--connect-baud", "0", "--quiet")
        assert r.returncode == 0 and "OK slot B" in r.stdout, r.stderr
        i = board_info(emu.port)
        assert (i.active, i.running, i.boot_error) == (1, 1, "")
    with board(tmp_path) as emu:  # and the signed image is what boots from now on
        i = board_info(emu.port)
        assert (i.active, i.running, i.boot_error) == (1, 1, "")
        with connect(emu.port, 0) as link:  # re-provisioning with a committed signed image: no warning
            assert provision.provision(link, owner["raw"], owner["priv"])[1].note == ""


def test_refused_active_slot_at_reset_falls_back_to_the_signed_previous_slot(host_build, plain, owner, tmp_path):
    signed = write(tmp_path, "a.elk", trust.sign_bytes(plain, owner["priv"]))
    unsigned = write(tmp_path, "u.elk", plain)
    with board(tmp_path) as emu:
        assert flash_one(emu.port, signed).ok      # slot A, signed before the board had a key
        assert flash_one(emu.port, unsigned).ok    # slot B, active; A is the previous slot
        with connect(emu.port, 0) as link:
            note = provision.provision(link, owner["raw"])[1].note
        assert note.startswith("the committed image (slot B) is not signed by the new owner key"), note
        assert board_info(emu.port).running == 1
        with connect(emu.port, 0) as link:
            link.request(CMD["RESET"])
        deadline = time.monotonic() + 60  # a hang guard; the loop ends as soon as the board runs
        while True:
            i = board_info(emu.port)  # connect waits while the board reports CHECKING
            if i.running != NONE or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert i.running == 0 and i.boot_error == "slot B: not signed by the owner key; running slot A", i
        # the image that runs became active, so the next flash writes over the refused slot
        assert (i.active, i.previous) == (0, 1)
        with connect(emu.port, 0) as link:
            with pytest.raises(LinkError, match="ELK_E_AUTH"):
                link.request(CMD["ROLLBACK"])
        r = flash_one(emu.port, unsigned)
        assert not r.ok and "already runs" not in r.summary() and "ELK_E_AUTH" in r.error, r.summary()


def test_damaged_slot_does_not_fall_back_below_the_security_floor(host_build, plain, owner, tmp_path):
    v5 = write(tmp_path, "v5.elk", trust.sign_bytes(plain, owner["priv"], security_counter=5))
    v6 = write(tmp_path, "v6.elk", trust.sign_bytes(plain, owner["priv"], security_counter=6))
    v7 = write(tmp_path, "v7.elk", trust.sign_bytes(plain, owner["priv"], security_counter=7))
    with board(tmp_path) as emu:
        provision_key(emu.port, owner["raw"])
        assert flash_one(emu.port, v5).ok  # slot A
        assert flash_one(emu.port, v6).ok  # slot B, floor 6
        i = board_info(emu.port)
        slot_size = i.slot_size
        assert (i.active, i.previous) == (1, 0)
    # flash wear in slot B: the power-on hash check drops it, and v5 in slot A is below the floor
    with open(tmp_path / "board.bin", "r+b") as f:
        f.seek(2 * ERASE + slot_size + 1000)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x40]))
    with board(tmp_path) as emu:
        i = board_info(emu.port)
        assert i.running == NONE and i.boot_error == "slot B damaged: SHA-256 mismatch", i
        assert "slot A: security counter 5 below floor 6" in (tmp_path / "fw.log").read_text()
        # the board still serves the protocol with no model: a newer signed image can be flashed
        assert flash_one(emu.port, v7).ok
        i = board_info(emu.port)
        assert i.running == i.active and i.boot_error == ""
