"""Passphrase-protected owner keys: `elk keygen` encrypts the PKCS#8 key (ELK_KEY_PASSPHRASE,
--passphrase-file, or a prompt on a real terminal), and sign / provision read encrypted keys the same
way; wrong or missing passphrases are one line and exit 2. Unencrypted keys keep working."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest
from conftest import ROOT, pack_stories260k

from elk import trust

ENV = {k: v for k, v in os.environ.items() if k != "ELK_KEY_PASSPHRASE"} | {"PYTHONPATH": str(ROOT / "host")}


def elk(*args, passphrase=None, cwd=None):
    env = dict(ENV)
    if passphrase is not None:
        env["ELK_KEY_PASSPHRASE"] = passphrase
    return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL, timeout=60)


def one_error_line(r, needle):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("elk: error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    return pack_stories260k(tmp_path_factory.mktemp("img") / "s.elk", quant="q8_0")


def signed_by(path, pub):
    found = trust.verify_file(path, pub)
    return all(f.ok for f in found) and any(f.check == "signature" for f in found)


def test_keygen_with_env_passphrase_writes_encrypted_pkcs8_that_signs(image_file, tmp_path):
    r = elk("keygen", "-o", tmp_path / "o", passphrase="correct horse")
    assert r.returncode == 0 and "encrypted" in r.stdout, r.stderr
    key = tmp_path / "o.key"
    pem = key.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") and oct(key.stat().st_mode & 0o777) == "0o600"
    # the PEM really is encrypted: cryptography refuses it without the passphrase, accepts it with
    from cryptography.hazmat.primitives import serialization
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    serialization.load_pem_private_key(pem, password=b"correct horse")
    img = tmp_path / "m.elk"
    img.write_bytes(image_file.read_bytes())
    r = elk("sign", img, "--key", key, passphrase="correct horse")
    assert r.returncode == 0, r.stderr
    assert signed_by(img, tmp_path / "o.pub")


def test_passphrase_file_drops_one_newline_and_matches_env(image_file, tmp_path):
    pf = tmp_path / "pw"
    pf.write_text("s3cret\n")
    assert elk("keygen", "-o", tmp_path / "o", "--passphrase-file", pf).returncode == 0
    img = tmp_path / "m.elk"
    img.write_bytes(image_file.read_bytes())
    r = elk("sign", img, "--key", tmp_path / "o.key", passphrase="s3cret")
    assert r.returncode == 0, r.stderr
    assert signed_by(img, tmp_path / "o.pub")
    img.write_bytes(image_file.read_bytes())
    r = elk("sign", img, "--key", tmp_path / "o.key", "--passphrase-file", pf, passphrase="wrong")
    assert r.returncode == 0, r.stderr  # the file wins over the environment
    assert signed_by(img, tmp_path / "o.pub")


def test_wrong_or_missing_passphrase_is_one_line_exit_2(image_file, tmp_path):
    assert elk("keygen", "-o", tmp_path / "o", passphrase="right").returncode == 0
    img = tmp_path / "m.elk"
    img.write_bytes(image_file.read_bytes())
    before = img.read_bytes()
    one_error_line(elk("sign", img, "--key", tmp_path / "o.key", passphrase="wrong"), "wrong passphrase")
    one_error_line(elk("sign", img, "--key", tmp_path / "o.key"), "encrypted; set ELK_KEY_PASSPHRASE")
    empty = tmp_path / "empty"
    empty.write_text("")
    one_error_line(elk("sign", img, "--key", tmp_path / "o.key", "--passphrase-file", empty), "is empty")
    one_error_line(elk("sign", img, "--key", tmp_path / "o.key", "--passphrase-file", tmp_path / "nope"),
                   "cannot read passphrase file")
    assert img.read_bytes() == before  # nothing signed
    # provision loads --old-key before it opens the port: the passphrase error comes first
    one_error_line(elk("provision", "--port", tmp_path / "no-such-port", "--key", tmp_path / "o.pub",
                       "--old-key", tmp_path / "o.key", passphrase="wrong"), "wrong passphrase")
    one_error_line(elk("provision", "--port", tmp_path / "no-such-port", "--key", tmp_path / "o.pub",
                       "--old-key", tmp_path / "o.key"), "encrypted")


def test_keygen_without_a_passphrase_source_refuses_and_writes_nothing(tmp_path):
    one_error_line(elk("keygen", "-o", tmp_path / "o"), "--no-passphrase")
    assert not (tmp_path / "o.key").exists() and not (tmp_path / "o.pub").exists()
    one_error_line(elk("keygen", "-o", tmp_path / "o", passphrase=""), "empty")
    one_error_line(elk("keygen", "-o", tmp_path / "o", "--no-passphrase", "--passphrase-file", tmp_path / "x"),
                   "not both")
    assert not (tmp_path / "o.key").exists()


def test_no_passphrase_and_existing_unencrypted_keys_keep_working(image_file, tmp_path):
    r = elk("keygen", "-o", tmp_path / "o", "--no-passphrase")
    assert r.returncode == 0 and "NOT encrypted" in r.stdout
    assert (tmp_path / "o.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    old_key, old_pub = trust.keygen(tmp_path / "legacy")  # a key as the first version of elk wrote it
    for key, pub in ((tmp_path / "o.key", tmp_path / "o.pub"), (old_key, old_pub)):
        img = tmp_path / "m.elk"
        img.write_bytes(image_file.read_bytes())
        r = elk("sign", img, "--key", key, passphrase="ignored for an unencrypted key")
        assert r.returncode == 0, r.stderr
        assert signed_by(img, pub)


def run_on_terminal(args, answers, timeout=60.0):
    """Run `elk args` with a real pty as its controlling terminal; answer each prompt seen (a line
    ending in ': ') with the next of `answers`. Returns (exit status, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.clear()
        os.environ.update(ENV)
        os.execv(sys.executable, [sys.executable, "-m", "elk", *map(str, args)])
    out, pending, deadline = b"", list(answers), time.monotonic() + timeout
    prompts = 0
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if out.count(b": ") > prompts and out.rstrip(b" ").endswith(b":"):
                prompts += 1
                if not pending:
                    break
                os.write(fd, pending.pop(0).encode() + b"\n")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_keygen_and_sign_prompt_on_a_terminal(image_file, tmp_path):
    rc, out = run_on_terminal(["keygen", "-o", tmp_path / "t"], ["one", "two"])
    assert rc == 2 and "differ" in out and not (tmp_path / "t.key").exists(), out
    rc, out = run_on_terminal(["keygen", "-o", tmp_path / "t"], ["tty pass", "tty pass"])
    assert rc == 0 and "Same passphrase again" in out and "tty pass" not in out, out  # no echo
    assert (tmp_path / "t.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    img = tmp_path / "m.elk"
    img.write_bytes(image_file.read_bytes())
    rc, out = run_on_terminal(["sign", img, "--key", tmp_path / "t.key"], ["tty pass"])
    assert rc == 0 and out.count("Passphrase for") == 1, out  # asked once, not once per use of the key
    assert signed_by(img, tmp_path / "t.pub")
    rc, out = run_on_terminal(["sign", img, "--key", tmp_path / "t.key"], ["nope"])
    assert rc == 2 and "wrong passphrase" in out and "Traceback" not in out, out
