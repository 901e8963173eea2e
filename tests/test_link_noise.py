"""A noisy line between host and board: a seeded proxy between two real ptys flips bits and drops
bytes in both directions. Flashing still delivers the image bit for bit (retransmissions and NAKs do
the work) and generation still streams the exact greedy text."""

import hashlib
import os
import random
import select
import threading
import tty

import pytest

from conftest import pack_stories260k
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect

GREEDY = ", there was a little girl named Lily. She loved to play outside in the park."


class NoisyLine:
    """Proxy: board pty <-> (noise) <-> a new pty whose slave the host opens."""

    def __init__(self, board_port, seed, flip=2e-5, drop=1e-5):
        self.rng = random.Random(seed)
        self.flip, self.drop = flip, drop
        self.board = os.open(board_port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.board)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.flipped = self.dropped = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _mangle(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            r = self.rng.random()
            if r < self.drop:
                self.dropped += 1
                continue
            if r < self.drop + self.flip:
                b ^= 1 << self.rng.randrange(8)
                self.flipped += 1
            out.append(b)
        return bytes(out)

    def _run(self):
        peer = {self.board: self.master, self.master: self.board}
        while not self.stop:
            ready, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    continue
                out = self._mangle(data)
                while out:
                    n = os.write(peer[fd], out)
                    out = out[n:]

    def close(self):
        self.stop = True
        self.thread.join()
        for fd in (self.board, self.master, self.slave):
            os.close(fd)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return pack_stories260k(tmp_path_factory.mktemp("img") / "s260.elk")


def test_flash_through_line_noise_arrives_bit_exact(host_build, image, tmp_path):
    flash_file = tmp_path / "board.bin"
    data = image.read_bytes()
    with Emulator("host", baud=0, flash=flash_file, log=open(os.devnull, "w")) as emu:
        line = NoisyLine(emu.port, seed=1234)
        try:
            res = flashing.flash([line.port], image, progress=False)[0]
            assert res.ok, res.error
            assert line.flipped + line.dropped > 0 and res.retransmits > 0  # the noise really hit frames
            print(f"noise: {line.flipped} bits flipped, {line.dropped} bytes dropped, "
                  f"{res.retransmits} retransmits, {res.wire_bytes_out} bytes out for {len(data)}")
            # the slot in the flash file holds exactly the image (slot A starts after two erase blocks)
            block = emu.board.erase_block_kb * 1024
            with open(flash_file, "rb") as f:
                f.seek(2 * block)
                assert hashlib.sha256(f.read(len(data))).digest() == hashlib.sha256(data).digest()
            # generation traffic is small: make the line much worse so events and acks get hit too
            hits = line.flipped + line.dropped
            line.flip, line.drop = 3e-3, 1e-3
            with connect(line.port, 0) as link:
                text = "".join(link.generate("Once upon a time", max_tokens=120, temperature=0, raw=True,
                                             reset=True))
                assert link.last_stats.gen_tokens == 120
            assert line.flipped + line.dropped > hits
            assert text.startswith(GREEDY)
        finally:
            line.close()
