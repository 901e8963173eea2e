"""Provisioning challenges on a board without a random generator (elk-fw --no-rng, board file
rng = "none"): the challenge comes from a counter reserved in flash and the board id, so it never
repeats across TRUST_INFO, PROVISION, RESET and restarts, and a recorded or withheld re-provisioning
request is refused when replayed (docs/trust.md "Challenges without an RNG")."""

import struct

import pytest

from conftest import owner_keys
from elk import boards, proto_spec, provision, spec, trust
from elk.emulate import Emulator
from elk.link import LinkError, connect

FLASH_MB = 8
ERASE = 4096  # boards/host.toml erase_block_kb = 4
PROVISION = proto_spec.COMMANDS["PROVISION"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return owner_keys(tmp_path_factory.mktemp("keys"), ("a", "b"))


def board(tmp_path, name="board.bin", rng=False):
    return Emulator("host", baud=0, flash=tmp_path / name, flash_mb=FLASH_MB, rng=rng,
                    log=open(tmp_path / "fw.log", "a"))


def info(port):
    with connect(port, 0) as link:
        return provision.trust_info(link)


def signed_request(ti, old_priv, new_key, flags=spec.PROV_FLAG_OWNER_KEY):
    """The PROVISION payload `elk provision` would send after reading TRUST_INFO `ti`."""
    sig = trust.sign_provision_request(old_priv, new_key, ti.sequence + 1, flags, ti.nonce)
    return struct.pack("<I", flags) + new_key + sig


def prov_record(flash_file):
    data = flash_file.read_bytes()[:2 * ERASE]
    return trust.select_prov(*(data[i * ERASE + 256:i * ERASE + 256 + spec.PROV_RECORD_SIZE] for i in range(2)))[0]


def test_board_file_rng_none_runs_elk_fw_without_its_rng(host_build, tmp_path):
    src = (boards.BOARDS_DIR / "host.toml").read_text()
    path = tmp_path / "host.toml"
    path.write_text('rng = "none"\n' + src)
    assert boards.load_file(path).rng == "none" and boards.load("host").rng == "os"
    path.write_text('rng = "maybe"\n' + src)
    with pytest.raises(boards.BoardError, match="field 'rng'"):
        boards.load_file(path)
    emu = Emulator("host", flash=tmp_path / "f.bin", flash_mb=FLASH_MB)
    assert "--no-rng" not in emu.command() and "--no-rng" in board(tmp_path).command()


def test_challenges_without_rng_never_repeat(host_build, keys, tmp_path):
    seen = []
    with board(tmp_path) as emu:
        with connect(emu.port, 0) as link:
            provision.provision(link, keys["a"]["raw"])  # first owner: unsigned (trust on first use)
            first = provision.trust_info(link)
            assert provision.trust_info(link).nonce == first.nonce  # stable until used
            seen.append(first.nonce)
            with pytest.raises(LinkError, match="ELK_E_AUTH"):  # a failed request uses the challenge up
                link.request(PROVISION, signed_request(first, keys["b"]["priv"], keys["b"]["raw"]))
            seen.append(provision.trust_info(link).nonce)
            link.request(proto_spec.COMMANDS["RESET"])
        seen.append(info(emu.port).nonce)
    for _ in range(2):  # power cycles
        with board(tmp_path) as emu:
            seen.append(info(emu.port).nonce)
    assert bytes(spec.TRUST_NONCE_SIZE) not in seen
    assert len(set(seen)) == len(seen), [n.hex() for n in seen]


def test_withheld_request_is_refused_after_a_restart(host_build, keys, tmp_path):
    """An attacker on the line keeps the owner's A -> B request from reaching the board (the owner sees
    a failure and walks away), then replays it after the board restarted: it must not pass."""
    with board(tmp_path) as emu:
        with connect(emu.port, 0) as link:
            provision.provision(link, keys["a"]["raw"])
            withheld = signed_request(provision.trust_info(link), keys["a"]["priv"], keys["b"]["raw"])
    with board(tmp_path) as emu:
        with connect(emu.port, 0) as link:
            with pytest.raises(LinkError, match="ELK_E_AUTH.*challenge"):
                link.request(PROVISION, withheld)
            ti = provision.trust_info(link)
            assert ti.owned and ti.owner_key == keys["a"]["raw"]
            # the owner's own request, built from this TRUST_INFO, still goes through
            before, after = provision.provision(link, keys["b"]["raw"], keys["a"]["priv"])
            assert after.owner_key == keys["b"]["raw"] and after.sequence == before.sequence + 1


def test_withheld_request_is_refused_after_another_provision_attempt(host_build, keys, tmp_path):
    with board(tmp_path) as emu:
        with connect(emu.port, 0) as link:
            provision.provision(link, keys["a"]["raw"])
            ti = provision.trust_info(link)
            withheld = signed_request(ti, keys["a"]["priv"], keys["b"]["raw"], flags=0)  # "clear the owner"
            with pytest.raises(LinkError, match="ELK_E_AUTH"):
                link.request(PROVISION, withheld[:-1] + bytes([withheld[-1] ^ 1]))  # damaged on the line
            with pytest.raises(LinkError, match="ELK_E_AUTH"):
                link.request(PROVISION, withheld)
            assert provision.trust_info(link).owned


def test_request_for_one_board_without_rng_is_refused_by_its_sibling(host_build, keys, tmp_path):
    """Two RNG-less boards of one owner in the same state (same record sequence, same counter): the board
    id keeps one board's challenge from being the other's."""
    with board(tmp_path, "one.bin") as one, board(tmp_path, "two.bin") as two:
        with connect(one.port, 0) as l1, connect(two.port, 0) as l2:
            provision.provision(l1, keys["a"]["raw"])
            provision.provision(l2, keys["a"]["raw"])
            t1, t2 = provision.trust_info(l1), provision.trust_info(l2)
            assert t1.sequence == t2.sequence and t1.nonce != t2.nonce
            clear_one = signed_request(t1, keys["a"]["priv"], bytes(32), flags=0)
            with pytest.raises(LinkError, match="ELK_E_AUTH"):
                l2.request(PROVISION, clear_one)
            assert provision.trust_info(l2).owned
            l1.request(PROVISION, clear_one)  # meant for board one: accepted there
            assert not provision.trust_info(l1).owned


def test_challenge_counter_is_stored_before_the_challenge_is_shown(host_build, keys, tmp_path):
    flash_file = tmp_path / "board.bin"
    with board(tmp_path) as emu:
        with connect(emu.port, 0) as link:
            provision.provision(link, keys["a"]["raw"])
            ti = provision.trust_info(link)  # reserves counter 0 (stored as 1) before answering
            rec = prov_record(flash_file)  # the board is running: the flash file already holds it
            assert rec.challenge_counter == 1 and rec.sequence == ti.sequence
            provision.trust_info(link)  # same power-on: no further flash write
            assert prov_record(flash_file) == rec
    untouched = flash_file.read_bytes()[:2 * ERASE]
    with board(tmp_path) as emu:  # a power-on without TRUST_INFO/PROVISION writes nothing
        with connect(emu.port, 0) as link:
            link.info()
    assert flash_file.read_bytes()[:2 * ERASE] == untouched
    with board(tmp_path) as emu:
        info(emu.port)
    assert prov_record(flash_file).challenge_counter == 2
    with board(tmp_path, rng=True) as emu:  # with an RNG: random challenges, the counter is left alone
        n1, n2 = info(emu.port).nonce, info(emu.port).nonce
        assert n1 == n2 and n1 != bytes(16)
    assert prov_record(flash_file).challenge_counter == 2
