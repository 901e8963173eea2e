"""A seeded, bounded fault campaign against the real emulated board (elk-fw behind a real pty) and the
real `elk` command, as an outside tester would run it. Faults at random points:

* power cut: elk-fw SIGKILLed once the host has sent a random number of bytes of a flash (onto a blank
  board, or over a committed image), then restarted on the same flash file;
* the host killed: SIGKILL of `elk flash` (or `elk chat`) after a random delay, then a new run;
* line noise: bit flips, dropped and duplicated bytes between host and board (a pty proxy, the same
  mechanism as test_link_noise.py) during a flash, a chat and a status;
* the board stopped (SIGSTOP) for a random time, also longer than the host's timeouts, then continued;
* truncated, bit-flipped, padded and too-large images offered to `elk flash`.

The promises checked: bad input is one `elk: error:` line and exit 2; nothing crashes or hangs; a
committed image is never lost (after a cut the board boots the last committed image or the new one if
its commit completed, and `elk status` says which, truthfully: the flash file holds what it reports);
the host never reports success for an image the board does not hold; a new `elk flash` finishes.

Budget: ELK_FAULT_BUDGET seconds for the whole file (default 30; every kind runs at least once),
ELK_FAULT_SEED (default 20261121). Every assertion message names the seed, the kind, the run and the
fault's parameters; ELK_FAULT_RUN=<kind>:<n> replays that one run. ELK_FAULT_MODE=asan runs it against
the AddressSanitizer build of elk-fw.

Defects it found (fixed, with focused tests in test_link_lost_reply.py): a GENERATE whose reply was
lost made the host wait 120 s for a turn that had already streamed; a session that left before its last
STATS was acknowledged had that STATS resent into the next session (an empty reply, exit 0).
"""

import hashlib
import json
import os
import random
import subprocess
import sys
import time

import pytest

from conftest import ROOT, pack_stories260k, scons
from fault_tools import Campaign, FaultLine, elk, one_line_error
from fault_tools import check_committed as _check_committed
from fault_tools import flash_ok as _flash_ok
from fault_tools import holds as _holds
from fault_tools import stop_board as _stop_board
from elk import flash as flashing
from elk.emulate import Emulator

SEED = int(os.environ.get("ELK_FAULT_SEED", "20261121"))
BUDGET = float(os.environ.get("ELK_FAULT_BUDGET", "30"))
ONLY = os.environ.get("ELK_FAULT_RUN", "")  # "kind:n": replay one run
MODE = os.environ.get("ELK_FAULT_MODE", "release")  # or "asan"
SHARE = {"power_cut": 0.3, "host_kill": 0.15, "noise": 0.25, "board_stop": 0.15, "bad_image": 0.15}
PROMPT = "Once upon a time"


def _quiet():
    return open(os.devnull, "w")


def _board(**kw):
    """The emulated host board, unthrottled; ELK_FAULT_MODE=asan runs the campaign against the
    AddressSanitizer build of elk-fw (a memory error kills it and the next check fails)."""
    if MODE != "release":
        scons(f"mode={MODE}", f"build/host-{MODE}/elk-fw")
    return Emulator("host", baud=0, log=_quiet(), mode=MODE, **kw)


CAMPAIGN = Campaign(SEED, BUDGET, ONLY, SHARE)
_runs, _rng, _count, TALLY = CAMPAIGN.runs, CAMPAIGN.rng, CAMPAIGN.count, CAMPAIGN.tally


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nfault campaign seed {SEED}, budget {BUDGET:g} s, elk-fw {MODE}: " +
          ", ".join(f"{k} {v[0]} runs/{v[1]} {'bytes hit' if k == 'noise' else 'faults'}" for k, v in TALLY.items()))


@pytest.fixture(scope="module")
def images(host_build, tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    x = pack_stories260k(d / "x.elk", name="campaign-x")
    y = pack_stories260k(d / "y.elk", quant="q8_0", name="campaign-y")
    return {"x": x, "y": y, "sha": {hashlib.sha256(p.read_bytes()).hexdigest(): k for k, p in
                                    (("x", x), ("y", y))}}


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """What a clean line gives: the greedy reply of each image (from `elk chat`), the host->board
    bytes of a flash of Y onto a blank board and over X, and how long `elk flash` takes."""
    ref = {}
    for variant, before, new in VARIANTS:
        with _board() as emu:
            for key in before:
                assert flashing.flash([emu.port], images[key], progress=False)[0].ok
            line = FaultLine(emu.port, random.Random(0))
            try:
                res = flashing.flash([line.port], images[new], progress=False)[0]
                assert res.ok, res.error
            finally:
                line.close()
            ref["bytes_" + variant] = line.sent
            if variant == "over":
                t0 = time.monotonic()
                r = elk("flash", images["x"], "--port", emu.port, "--quiet")
                ref["flash_s"] = time.monotonic() - t0
                assert r.returncode == 0, r.stderr
                ref["text_x"] = _chat(emu.port).stdout
                assert elk("flash", images["y"], "--port", emu.port, "--quiet").returncode == 0
                ref["text_y"] = _chat(emu.port).stdout
    assert ref["text_x"].strip() and ref["text_y"].strip()
    return ref


def _chat(port, *extra):
    r = elk("chat", "--port", port, "-p", PROMPT, "--raw", "-n", "40", *extra)
    assert r.returncode == 0 or "--reply-timeout" in extra, r.stderr
    return r


# power-cut variants: (name, images flashed and committed first, image whose flash is cut)
VARIANTS = (("blank", (), "y"), ("over", ("x",), "y"), ("twice", ("x", "y"), "x"))


def test_power_cut_at_a_random_byte_of_a_flash(images, reference, tmp_path):
    for i in _runs("power_cut"):
        rng = _rng("power_cut", i)
        variant, before, new = rng.choices(VARIANTS, weights=(3, 4, 3))[0]
        old = before[-1] if before else None
        total = reference["bytes_" + variant]
        kill_at = rng.randrange(0, total + total // 50 + 1)
        where = f"seed {SEED} power_cut:{i} ({variant}: {'+'.join(before) or 'blank'} then {new}, kill after " \
                f"{kill_at} of {total} host bytes)"
        flash_file = tmp_path / f"cut{i}.bin"
        with _board(flash=flash_file) as emu:
            for key in before:
                assert flashing.flash([emu.port], images[key], progress=False)[0].ok
            line = FaultLine(emu.port, rng, kill_at=kill_at, on_kill=emu.kill)
            try:
                res = flashing.flash([line.port], images[new], progress=False)[0]
            finally:
                line.close()
            if not line.cut:
                assert res.ok, f"{where}: no cut, yet the flash failed: {res.error}"
        _count("power_cut", int(line.cut))
        with _board(flash=flash_file) as emu:
            allowed = {new} if res.ok else {old, new}
            _check_committed(emu, flash_file, images, allowed, where + f", host said ok={res.ok}")
            _flash_ok(emu.port, images[new], where)
            info = _holds(emu.port, images, new, where)
            if old is not None and old != new:
                prev = info.previous
                assert prev < 2 and images["sha"].get(info.slots[prev].sha256) == old, f"{where}: {info}"


def test_host_killed_mid_flash_or_mid_chat(images, reference, tmp_path):
    for i in _runs("host_kill"):
        rng = _rng("host_kill", i)
        during = rng.choice(["flash", "flash", "chat"])
        delay = rng.uniform(0.0, reference["flash_s"] * 1.2)
        where = f"seed {SEED} host_kill:{i} (elk {during} SIGKILLed after {delay:.3f} s)"
        flash_file = tmp_path / f"host{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
            args = (["flash", images["y"], "--port", emu.port, "--quiet"] if during == "flash" else
                    ["chat", "--port", emu.port, "-p", PROMPT, "--raw", "-n", "400"])
            proc = subprocess.Popen([sys.executable, "-m", "elk", *map(str, args)], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            proc.kill()
            proc.wait()
            _count("host_kill")
            assert emu.alive(), f"{where}: elk-fw died"
            which = _check_committed(emu, flash_file, images, {"x", "y"}, where, booted=during == "flash")
            if during == "chat":
                assert which == "x", where
                r = _chat(emu.port)
                assert r.stdout == reference["text_x"], f"{where}: the next chat: {r.stdout!r}"
            else:
                _flash_ok(emu.port, images["y"], where)
                _holds(emu.port, images, "y", where)
                assert _chat(emu.port).stdout == reference["text_y"], where


def _noise(rng, top):
    level = 10 ** rng.uniform(-5.0, top)
    kinds = rng.sample(["flip", "drop", "dup"], rng.randint(1, 3))
    return {k: level for k in kinds}, rng.choice([("to_board",), ("to_host",), ("to_board", "to_host")])


def test_line_noise_during_flash_chat_and_status(images, reference, tmp_path):
    for i in _runs("noise"):
        rng = _rng("noise", i)
        action = rng.choice(["flash", "chat", "status"])
        rates, directions = _noise(rng, -3.7 if action == "flash" else -2.3)
        where = f"seed {SEED} noise:{i} ({action}, {rates}, {'+'.join(directions)})"
        flash_file = tmp_path / f"noise{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x" if action == "flash" else "y"], progress=False)[0].ok
            clean = json.loads(elk("status", "--json", "--port", emu.port).stdout) if action == "status" else None
            line = FaultLine(emu.port, rng, directions=directions, **rates)
            try:
                if action == "flash":
                    r = elk("flash", images["y"], "--port", line.port, "--quiet")
                elif action == "chat":
                    r = elk("chat", "--port", line.port, "-p", PROMPT, "--raw", "-n", "40")
                else:
                    r = elk("status", "--json", "--port", line.port)
            finally:
                line.close()
            _count("noise", line.hits)
            where += f", {line.hits} bytes hit"
            assert emu.alive(), f"{where}: elk-fw died"
            if r.returncode != 0:
                one_line_error(r, where)
            if action == "flash":
                which = _check_committed(emu, flash_file, images, {"x", "y"}, where, booted=action == "flash")
                if r.returncode == 0:
                    assert which == "y", f"{where}: elk flash said OK, the board runs {which}"
                _flash_ok(emu.port, images["y"], where)
                _holds(emu.port, images, "y", where)
            elif action == "chat":
                if r.returncode == 0:
                    assert r.stdout == reference["text_y"], f"{where}: {r.stdout!r}"
                assert _chat(emu.port).stdout == reference["text_y"], f"{where}: the next clean chat"
            else:
                if r.returncode == 0:
                    st = json.loads(r.stdout)
                    for key in ("active", "running", "previous", "board", "firmware", "slot_size", "slots",
                                "capabilities", "boot_error"):
                        assert st[key] == clean[key], f"{where}: {key} {st[key]!r} != {clean[key]!r}"
                assert elk("status", "--port", emu.port).returncode == 0, where


def test_board_stopped_longer_than_the_host_waits(images, reference, tmp_path):
    long_stop = BUDGET >= 120  # past the host's whole retry ladder (about 15 s) only in long runs
    for i in _runs("board_stop"):
        rng = _rng("board_stop", i)
        action = rng.choice(["flash", "chat", "status"])
        delay = rng.uniform(0.0, reference["flash_s"] if action == "flash" else 0.6)
        seconds = rng.uniform(0.3, 20.0 if long_stop and action == "flash" else 3.0)
        where = f"seed {SEED} board_stop:{i} ({action}, SIGSTOP after {delay:.3f} s for {seconds:.2f} s)"
        flash_file = tmp_path / f"stop{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
            stopper = _stop_board(emu, delay, seconds)
            if action == "flash":
                r = elk("flash", images["y"], "--port", emu.port, "--quiet")
            elif action == "chat":  # the host gives up after 1 s of silence
                r = elk("chat", "--port", emu.port, "-p", PROMPT, "--raw", "-n", "400", "--reply-timeout", "1",
                        "--connect-timeout", "1")
            else:
                r = elk("status", "--json", "--port", emu.port, "--connect-timeout", "1")
            stopper.join()
            _count("board_stop")
            assert emu.alive(), f"{where}: elk-fw died"
            if r.returncode != 0:
                one_line_error(r, where)
            which = _check_committed(emu, flash_file, images, {"x", "y"}, where, booted=action == "flash")
            if action == "flash":
                if r.returncode == 0:
                    assert which == "y", f"{where}: elk flash said OK, the board runs {which}"
                _flash_ok(emu.port, images["y"], where)
                _holds(emu.port, images, "y", where)
            else:
                assert which == "x", where
                if action == "chat" and r.returncode == 0:
                    long_text = r.stdout
                    assert long_text.startswith(reference["text_x"].rstrip("\n")[:40]), f"{where}: {long_text!r}"
                assert _chat(emu.port).stdout == reference["text_x"], f"{where}: the next chat"


def _bad_image(rng, data):
    kind = rng.choice(["truncated", "bitflip", "bitflip", "appended", "too_large"])
    if kind == "appended":  # a concatenated or padded file: no trailer flag, bytes after the image
        n = rng.randrange(1, 3 * 4096)
        return kind, data + bytes(rng.randrange(256) for _ in range(n)), f"{n} random bytes appended"
    if kind == "truncated":
        n = rng.randrange(0, len(data))
        return kind, data[:n], f"cut to {n} of {len(data)} bytes"
    if kind == "bitflip":
        pos, bit = rng.randrange(len(data)), rng.randrange(8)
        out = bytearray(data)
        out[pos] ^= 1 << bit
        return kind, bytes(out), f"bit {bit} of byte {pos} flipped"
    return kind, data, "whole image, a board with 1 MiB of flash"


def _flash_digest(emu, flash_file, size):
    """SHA-256 of the boot record blocks and the first `size` bytes (plus a block) of both slots: what
    a flash would change (the whole emulated flash is gigabytes of sparse file)."""
    block = emu.board.erase_block_kb * 1024
    slot = (os.path.getsize(flash_file) - 2 * block) // 2 // block * block
    h = hashlib.sha256()
    with open(flash_file, "rb") as f:
        for start, n in ((0, 2 * block), (2 * block, size + block), (2 * block + slot, size + block)):
            f.seek(start)
            h.update(f.read(n))
    return h.hexdigest()


def test_bad_images_are_one_line_and_leave_the_board_untouched(images, tmp_path):
    data = images["x"].read_bytes()
    for i in _runs("bad_image"):
        rng = _rng("bad_image", i)
        kind, bad, how = _bad_image(rng, data)
        where = f"seed {SEED} bad_image:{i} ({kind}: {how})"
        path = tmp_path / f"bad{i}.elk"
        path.write_bytes(bad)
        flash_file = tmp_path / f"bad{i}.bin"
        opts = {"flash_mb": 1} if kind == "too_large" else {}
        with _board(flash=flash_file, **opts) as emu:
            if kind != "too_large":
                assert flashing.flash([emu.port], images["y"], progress=False)[0].ok
            before = _flash_digest(emu, flash_file, len(data))
            r = elk("flash", path, "--port", emu.port, "--quiet")
            _count("bad_image")
            one_line_error(r, where)
            assert emu.alive(), where
            assert _flash_digest(emu, flash_file, len(data)) == before, f"{where}: the flash changed"
            if kind != "too_large":
                _holds(emu.port, images, "y", where)
