"""Factory owner key: `scons owner_key=owner.pub` builds an elk-fw (build/<board>-owner-<key id>/) that
is owned by that key while its flash holds no provisioning record, so an unsigned first PROVISION (trust
on first use) and unsigned images are refused; the key can be changed by its holder, never removed."""

import subprocess
import sys

import pytest
from conftest import ROOT, pack_stories260k, run_elk
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elk import flash as flashing
from elk import proto_spec, provision, trust
from elk.emulate import Emulator
from elk.link import LinkError, connect

FLASH_MB = 8
# a fixed factory key, so the keyed build directory stays the same between runs (and is incremental)
FACTORY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def pem_pub(private, path):
    path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture(scope="module")
def keyed_fw(host_build, tmp_path_factory):
    pub = pem_pub(FACTORY, tmp_path_factory.mktemp("factory") / "factory.pub")
    out = ROOT / "build" / f"host-owner-{trust.key_id(trust.public_bytes(FACTORY)).hex()}" / "elk-fw"
    r = subprocess.run([sys.executable, "-m", "SCons", "-Q", "-j1", f"owner_key={pub}",
                        str(out.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and out.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    plain = pack_stories260k(d / "u.elk", quant="q8_0")
    signed = d / "f.elk"
    signed.write_bytes(trust.sign_bytes(plain.read_bytes(), FACTORY))
    return plain, signed


def keyed_board(fw, tmp_path, name="board.bin"):
    emu = Emulator("host", baud=0, flash=tmp_path / name, flash_mb=FLASH_MB, log=open(tmp_path / "fw.log", "a"))
    emu.fw = fw  # the factory-keyed build instead of build/host/elk-fw
    return emu


def test_scons_owner_key_builds_apart_and_refuses_a_bad_key(keyed_fw, tmp_path):
    assert keyed_fw.parent != ROOT / "build" / "host"
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    r = subprocess.run([sys.executable, "-m", "SCons", "-Q", f"owner_key={bad}", "build/host/elk-fw"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "scons: error: owner_key:" in r.stdout and "not an Ed25519 public key" in r.stdout


def test_factory_keyed_board_refuses_other_first_provisioning_and_unsigned_images(keyed_fw, images, tmp_path):
    plain, signed = images
    other = Ed25519PrivateKey.generate()
    with keyed_board(keyed_fw, tmp_path) as emu:
        with connect(emu.port, 0) as link:
            ti = provision.trust_info(link)
            assert ti.owned and ti.owner_key == trust.public_bytes(FACTORY) and ti.sequence == 1
            with pytest.raises(LinkError, match="ELK_E_AUTH"):  # trust on first use is gone
                link.request(proto_spec.COMMANDS["PROVISION"],
                             (1).to_bytes(4, "little") + trust.public_bytes(other))
            with pytest.raises(LinkError, match="ELK_E_INVAL.*not removed"):  # not even by the factory key
                provision.provision(link, None, FACTORY)
        r = flashing.flash([emu.port], plain, connect_baud=0, progress=False)[0]
        assert not r.ok and "ELK_E_AUTH" in r.error
        assert flashing.flash([emu.port], signed, connect_baud=0, progress=False)[0].ok
        # the factory key's holder hands the board to a new owner
        with connect(emu.port, 0) as link:
            _, after = provision.provision(link, trust.public_bytes(other), FACTORY)
        assert after.owner_key == trust.public_bytes(other) and after.sequence >= 2
    with keyed_board(keyed_fw, tmp_path) as emu:  # the record now names the new owner
        assert info_key(emu.port) == trust.public_bytes(other)
    r = run_elk("provision", "--factory-reset", tmp_path / "board.bin", "--board", "host")
    assert r.returncode == 0, r.stderr
    with keyed_board(keyed_fw, tmp_path) as emu:  # the physical reset returns the board to the factory key
        assert info_key(emu.port) == trust.public_bytes(FACTORY)


def info_key(port):
    with connect(port, 0) as link:
        ti = provision.trust_info(link)
    assert ti.owned
    return ti.owner_key


def test_plain_build_keeps_trust_on_first_use(host_build, tmp_path):
    other = Ed25519PrivateKey.generate()
    with Emulator("host", baud=0, flash=tmp_path / "b.bin", flash_mb=FLASH_MB,
                  log=open(tmp_path / "fw.log", "a")) as emu:
        with connect(emu.port, 0) as link:
            assert not provision.trust_info(link).owned
            provision.provision(link, trust.public_bytes(other))
            assert provision.trust_info(link).owner_key == trust.public_bytes(other)
