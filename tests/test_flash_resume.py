"""Flashing survives what real boards do: a board killed in the middle of a flash restarts on the
image it had and the next flash resumes (sends only what is missing); a re-flash after a small change
sends only the changed blocks; boards flash in parallel and one failing leaves the others alone."""

import hashlib
import os

import pytest

from conftest import fixture_path
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect

GREEDY = ", there was a little girl named Lily. She loved"


def _pack(out, **kw):
    from elk.convert.pack import pack

    pack(str(fixture_path("stories260K.bin")), str(out), tokenizer=str(fixture_path("tok512.bin")), **kw)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    return {"f32": _pack(d / "f32.elk"), "q8": _pack(d / "q8.elk", quant="q8_0"),
            "renamed": _pack(d / "renamed.elk", name="stories260K-v2")}


def _quiet():
    return open(os.devnull, "w")


def _greedy(port):
    with connect(port, 0) as link:
        return "".join(link.generate("Once upon a time", max_tokens=12, temperature=0, raw=True, reset=True))


class KillAt:
    """Progress sink that cuts the board's power once `fraction` of the image has been sent."""

    def __init__(self, emu, fraction):
        self.emu, self.fraction, self.killed_at = emu, fraction, None

    def update(self, port, done, total, elapsed):
        if self.killed_at is None and done >= self.fraction * total:
            self.killed_at = done
            self.emu.kill()

    def note(self, port, text):
        pass


def test_flash_killed_midway_boots_previous_image_and_resumes(host_build, images, tmp_path):
    flash_file = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash_file, log=_quiet()) as emu:
        assert flashing.flash([emu.port], images["f32"], progress=False)[0].ok
        t = flashing._Transfer(emu.port, images["q8"].read_bytes(),
                               hashlib.sha256(images["q8"].read_bytes()).digest(), 0, None, None)
        t.progress = KillAt(emu, 0.5)
        with pytest.raises(Exception):
            t.run()
        assert t.progress.killed_at is not None and not emu.alive()
    with Emulator("host", baud=0, flash=flash_file, log=_quiet()) as emu:
        with connect(emu.port, 0) as link:
            info = link.info()
        assert info.running == 0 and info.active == 0 and info.slots[0].name == "stories260K"
        assert not info.slots[1].valid  # the half-written slot is not trusted
        assert _greedy(emu.port).startswith(GREEDY[:30])
        size = images["q8"].stat().st_size
        res = flashing.flash([emu.port], images["q8"], progress=False)[0]
        assert res.ok, res.error
        assert res.blocks_skipped > 0
        assert res.data_bytes_sent <= size - t.progress.killed_at + 2 * res.block_size
        with connect(emu.port, 0) as link:
            info = link.info()
        assert info.active == 1 and info.running == 1 and info.previous == 0
        assert info.slots[1].sha256 == hashlib.sha256(images["q8"].read_bytes()).hexdigest()


def test_reflash_after_small_change_sends_only_changed_blocks(host_build, images, tmp_path):
    with Emulator("host", baud=0, log=_quiet()) as emu:
        first = flashing.flash([emu.port], images["f32"], progress=False)[0]
        assert first.ok and first.data_bytes_sent == images["f32"].stat().st_size
        # same tensors, a new name: the header block and the metadata at the end differ; the rest is
        # copied from slot A on the board
        res = flashing.flash([emu.port], images["renamed"], progress=False)[0]
        assert res.ok, res.error
        assert res.slot == "B"
        old, new, b = images["f32"].read_bytes(), images["renamed"].read_bytes(), res.block_size
        changed = [i for i in range(0, len(new), b) if new[i:i + b] != old[i:i + b]]
        assert 1 <= len(changed) <= 3
        assert res.blocks_sent == len(changed)
        assert res.data_bytes_sent == sum(len(new[i:i + b]) for i in changed)
        assert res.blocks_copied == -(-len(new) // b) - len(changed)
        # back to the first image: slot A still holds it, nothing is sent at all
        again = flashing.flash([emu.port], images["f32"], progress=False)[0]
        assert again.ok and again.slot == "A" and again.data_bytes_sent == 0
        with connect(emu.port, 0) as link:
            info = link.info()
        assert info.running == 0 and info.slots[1].name == "stories260K-v2"
        assert _greedy(emu.port).startswith(GREEDY[:30])


def test_rollback_returns_to_the_previous_slot(host_build, images):
    from elk.link import CMD

    with Emulator("host", baud=0, log=_quiet()) as emu:
        assert flashing.flash([emu.port], images["f32"], progress=False)[0].ok
        assert flashing.flash([emu.port], images["renamed"], progress=False)[0].ok
        with connect(emu.port, 0) as link:
            assert link.request(CMD["ROLLBACK"])[0] == 0
            info = link.info()
        assert info.active == 0 and info.running == 0 and info.previous == 1


def test_parallel_flash_one_board_failing(host_build, images, capsys):
    with Emulator("host", baud=0, log=_quiet()) as good, \
            Emulator("host", baud=0, flash_mb=1, log=_quiet()) as small:
        results = flashing.flash([good.port, small.port], images["f32"], progress=True)
    ok, bad = results
    assert ok.ok and ok.port == good.port and ok.data_bytes_sent == images["f32"].stat().st_size
    assert not bad.ok and "image too large for the board's flash" in bad.error
    progress = capsys.readouterr().err
    assert good.port in progress and small.port in progress
    assert "FAILED" in bad.summary() and "OK slot A" in ok.summary()


def test_flash_rejects_a_file_that_is_not_an_image(host_build, tmp_path):
    junk = tmp_path / "junk.elk"
    junk.write_bytes(b"not an image" * 100)
    with pytest.raises(Exception, match="not an elk image"):
        flashing.flash(["/dev/null"], junk, progress=False)


class StopAt(KillAt):
    """Progress sink that interrupts the host side (as Ctrl-C on `elk flash` would) midway."""

    def update(self, port, done, total, elapsed):
        if self.killed_at is None and done >= self.fraction * total:
            self.killed_at = done
            raise KeyboardInterrupt


def test_interrupted_host_transfer_resumes_without_resending(host_build, images):
    data = images["q8"].read_bytes()
    with Emulator("host", baud=0, log=_quiet()) as emu:
        t = flashing._Transfer(emu.port, data, hashlib.sha256(data).digest(), 0, None, None)
        t.progress = StopAt(emu, 0.6)
        with pytest.raises(KeyboardInterrupt):
            t.run()
        assert emu.alive()
        res = flashing.flash([emu.port], images["q8"], progress=False)[0]
        assert res.ok, res.error
        assert res.blocks_skipped > 0
        assert res.data_bytes_sent <= len(data) - t.progress.killed_at + 2 * res.block_size


def test_image_that_cannot_boot_is_never_committed(host_build, tmp_path):
    """FLASH_END accepts a well-formed image, but a board with 1 MiB of RAM cannot hold the KV cache of
    a stories15M-shaped model (3.5 MiB): BOOT fails, the slot is valid yet not active, and the board
    keeps serving (INFO says why)."""
    from elk.models.synth import synthesize

    image = synthesize("stories15m", tmp_path / "s15.elk", vocab_path=fixture_path("tok512.bin"))
    with Emulator("host", baud=0, ram_mb=1, log=_quiet()) as emu:
        res = flashing.flash([emu.port], image, progress=False)[0]
        assert not res.ok and "BOOT" in res.error
        with connect(emu.port, 0) as link:
            info = link.info()
        assert info.slots[0].valid and info.active == 255 and info.running == 255
        assert "arena" in info.boot_error or "memory" in info.boot_error or "small" in info.boot_error


def test_flash_cli_prints_one_summary_per_board_and_fails_if_one_did(host_build, images):
    import subprocess
    import sys

    from conftest import ROOT

    with Emulator("host", baud=0, log=_quiet()) as good:
        r = subprocess.run([sys.executable, "-m", "elk", "flash", images["f32"], "--port", good.port,
                            "--port", "/dev/pts/no-such-board"], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
    assert r.returncode == 2
    lines = [line for line in r.stdout.splitlines() if "warning" not in line]
    assert lines[0].startswith(f"{good.port}: OK slot A")
    assert lines[1] == "/dev/pts/no-such-board: FAILED: port not found (is `elk emulate` running? `elk ports` lists ports)"
    assert "Traceback" not in r.stderr
