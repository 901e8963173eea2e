"""The fault campaign's second half (the first: test_fault_campaign.py): seeded, bounded runs against the
real emulated board behind a real pty and the real `elk` command, with the faults that one leaves out:

* two faults in one run: line noise plus a power cut mid-flash (noise_cut); the host killed mid-flash
  and then the board stopped while the next command runs (kill_stop); a flash interrupted by a pulled
  cable and its resume (of the same image, or of the committed one: FLASH_COPY) cut by a power cut
  (cut_resume); a parallel flash of two boards, one cut, one on a noisy line (parallel); a cut mid-flash
  of a signed image on a provisioned board (owned_cut); elk chat SIGSTOPped mid-reply (host_stop);
* power cuts inside the board's own work: at a random time while it generates (cut_gen), around the
  SET_BAUD of a flash on a throttled line, on the way up to the fast rate or back to the console rate
  (cut_baud), and at or just after COMMIT (cut_commit);
* a software-throttled line (9600-115200 baud, as an emulated board paces it, with strict rates): flash
  (switching to a faster rate, with or without noise, or interrupted at the slow rate and resumed after
  a power cycle), chat (clean or noisy), status, a board stopped longer than the host waits, and a host
  killed while the board may be at the fast rate (throttled);
* one run against the cross-built qemu-a76 board under qemu: a power cut mid-flash (qemu_cut).

The promises are the first campaign's: one `elk: error:` line and exit 2, or success with the exact
image / greedy text; nothing hangs; a committed image is never lost and `elk status` reports what the
flash file holds; the host never says OK for an image the board does not hold; the next flash finishes.

ELK_FAULT_BUDGET seconds (default 20, shared by the kinds; each runs at least once; the qemu run and the
reference flashes come on top, a few seconds), ELK_FAULT_SEED, ELK_FAULT_RUN=<kind>:<n> replays one run,
ELK_FAULT_MODE=asan runs the native kinds against the AddressSanitizer elk-fw. Assertion messages name
the seed, the kind, the run and the fault's parameters.
"""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, pack_stories260k, scons
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import CMD, connect
from fault_tools import (Campaign, FaultLine, check_committed, elk, flash_ok, holds, one_line_error,
                         stop_board)

SEED = int(os.environ.get("ELK_FAULT_SEED", "20261121"))
BUDGET = float(os.environ.get("ELK_FAULT_BUDGET", "20"))
ONLY = os.environ.get("ELK_FAULT_RUN", "")
MODE = os.environ.get("ELK_FAULT_MODE", "release")
SHARE = {"noise_cut": 0.1, "kill_stop": 0.09, "cut_resume": 0.1, "parallel": 0.06, "owned_cut": 0.06,
         "host_stop": 0.07, "cut_gen": 0.07, "cut_baud": 0.12, "cut_commit": 0.06, "throttled": 0.27, "qemu_cut": 0.0}
PROMPT = "Once upon a time"
SLOW = (9600, 19200, 38400, 57600, 115200)  # console rates of the throttled runs
CAMPAIGN = Campaign(SEED, BUDGET, ONLY, SHARE)


def _quiet():
    return open(os.devnull, "w")


def _board(baud=0, max_baud=3000000, **kw):
    """The emulated host board; a paced one (baud > 0) garbles bytes while the host's side of the line is
    at another rate (elk-fw --strict-rate), as a real cable does: every command here names the rate."""
    if MODE != "release":
        scons(f"mode={MODE}", f"build/host-{MODE}/elk-fw")
    return Emulator("host", baud=baud, max_baud=max_baud, log=_quiet(), mode=MODE, strict_rate=baud > 0, **kw)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nmulti-fault campaign seed {SEED}, budget {BUDGET:g} s, elk-fw {MODE}: " +
          ", ".join(f"{k} {v[0]} runs/{v[1]} faults" for k, v in CAMPAIGN.tally.items()))


@pytest.fixture(scope="module")
def images(host_build, tmp_path_factory):
    """Two small images (a flash at 3 Mbaud takes about a second): X q4_0, Y q8_0."""
    d = tmp_path_factory.mktemp("img")
    x = pack_stories260k(d / "x.elk", quant="q4_0", name="multi-x")
    y = pack_stories260k(d / "y.elk", quant="q8_0", name="multi-y")
    return {"x": x, "y": y, "sha": {hashlib.sha256(p.read_bytes()).hexdigest(): k for k, p in
                                    (("x", x), ("y", y))}}


def _chat(port, *extra, n=40):
    return elk("chat", "--port", port, "-p", PROMPT, "--raw", "-n", n, *extra)


def _cut_during(emu, args, delay, where):
    """`elk ARGS` against the board, its power cut `delay` seconds later; the command's result (it must end
    within 60 s of the cut: a hang is a failure naming `where`)."""
    proc = subprocess.Popen([sys.executable, "-m", "elk", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    emu.kill()
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"{where}: elk {args[0]} hung after the board's power was cut") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _recorded_flash(port, image, **kw):
    line = FaultLine(port, random.Random(0))
    try:
        res = flashing.flash([line.port], image, progress=False, **kw)[0]
        assert res.ok, res.error
    finally:
        line.close()
    return line


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """What a clean line gives: each image's greedy text, the host bytes of a flash of Y over X
    (unthrottled, and on a 115200 baud board that switches to 3 Mbaud, with where each command ends),
    and how long a 400-token chat takes."""
    ref = {}
    with _board() as emu:
        assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
        r = _chat(emu.port)
        assert r.returncode == 0, r.stderr
        ref["text_x"] = r.stdout
        t0 = time.monotonic()
        assert _chat(emu.port, n=400).returncode == 0
        ref["chat_s"] = time.monotonic() - t0
        line = _recorded_flash(emu.port, images["y"])
        ref["bytes_over"], ref["frames_over"] = line.sent, line.frames
        r = _chat(emu.port)
        assert r.returncode == 0, r.stderr
        ref["text_y"] = r.stdout
    with _board(baud=115200, flash=tmp_path_factory.mktemp("ref") / "ref.bin") as emu:
        assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
        line = _recorded_flash(emu.port, images["y"])
        ref["frames_slow"] = line.frames
        assert [c for _, c in line.frames].count(CMD["SET_BAUD"]) == 2, line.frames  # up, and back home
    assert ref["text_x"].strip() and ref["text_y"].strip() and ref["text_x"] != ref["text_y"]
    return ref


def _ends(frames, code):
    return [at for at, c in frames if c == code]


def _after_cut(flash_file, images, old, new, ok, where, **board):
    """Power back on after a cut: the committed image is there, the next flash finishes and keeps the
    old image as the rollback."""
    with _board(flash=flash_file, **board) as emu:
        rate = board.get("baud") or None
        check_committed(emu, flash_file, images, {new} if ok else {old, new}, where + f", host said ok={ok}",
                        baud=rate)
        flash_ok(emu.port, images[new], where, baud=rate)
        info = holds(emu.port, images, new, where, baud=rate or 0)
        if old is not None and old != new:
            prev = info.previous
            assert prev < 2 and images["sha"].get(info.slots[prev].sha256) == old, f"{where}: {info}"


def _cut_flash(emu, images, rng, new, **line):
    """Flash `new` through a FaultLine that cuts the board's power (line: FaultLine options)."""
    fl = FaultLine(emu.port, rng, on_kill=emu.kill, **line)
    try:
        res = flashing.flash([fl.port], images[new], progress=False)[0]
    finally:
        fl.close()
    return res, fl


# -- two faults in one run ------------------------------------------------------------------------


def test_noise_and_a_power_cut_in_one_flash(images, reference, tmp_path):
    for i in CAMPAIGN.runs("noise_cut"):
        rng = CAMPAIGN.rng("noise_cut", i)
        level = 10 ** rng.uniform(-5.0, -3.7)
        rates = {k: level for k in rng.sample(["flip", "drop", "dup"], rng.randint(1, 3))}
        total = reference["bytes_over"]
        kill_at = rng.randrange(0, total + 1)
        where = f"seed {SEED} noise_cut:{i} (X then Y, {rates}, cut after {kill_at} of {total} host bytes)"
        flash_file = tmp_path / f"nc{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
            res, fl = _cut_flash(emu, images, rng, "y", kill_at=kill_at, **rates)
        CAMPAIGN.count("noise_cut", int(fl.cut) + int(fl.hits > 0))
        if not fl.cut:
            assert res.ok, f"{where}: no cut, yet the flash failed: {res.error}"
        _after_cut(flash_file, images, "x", "y", res.ok, where + f", {fl.hits} bytes hit")


def test_host_killed_then_board_stopped(images, reference, tmp_path):
    for i in CAMPAIGN.runs("kill_stop"):
        rng = CAMPAIGN.rng("kill_stop", i)
        delay = rng.uniform(0.0, 1.0)
        action = rng.choice(["flash", "status"])
        stop_after, stop_s = rng.uniform(0.0, 0.5), rng.uniform(0.3, 2.5)
        baud = rng.choice([0, 115200])
        where = (f"seed {SEED} kill_stop:{i} ({baud or 'unthrottled'} baud: elk flash SIGKILLed after {delay:.3f} s, "
                 f"then elk {action} with the board SIGSTOPped after {stop_after:.3f} s for {stop_s:.2f} s)")
        flash_file = tmp_path / f"ks{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
        with _board(flash=flash_file, baud=baud) as emu:
            proc = subprocess.Popen([sys.executable, "-m", "elk", "flash", str(images["y"]), "--port", emu.port,
                                     "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            proc.kill()
            proc.wait()
            stopper = stop_board(emu, stop_after, stop_s)
            if action == "flash":
                r = elk("flash", images["y"], "--port", emu.port, "--quiet")
            else:
                r = elk("status", "--json", "--port", emu.port, "--connect-timeout", "1")
            stopper.join()
            CAMPAIGN.count("kill_stop", 2)
            assert emu.alive(), f"{where}: elk-fw died"
            if r.returncode != 0:
                one_line_error(r, where)
            which = check_committed(emu, flash_file, images, {"x", "y"}, where, booted=True)
            if action == "flash" and r.returncode == 0:
                assert which == "y", f"{where}: elk flash said OK, the board runs {which}"
            flash_ok(emu.port, images["y"], where)
            holds(emu.port, images, "y", where)
            r = _chat(emu.port)
            assert r.returncode == 0 and r.stdout == reference["text_y"], f"{where}: {r.stdout!r} {r.stderr!r}"


def test_power_cut_while_resuming_an_interrupted_flash(images, reference, tmp_path):
    for i in CAMPAIGN.runs("cut_resume"):
        rng = CAMPAIGN.rng("cut_resume", i)
        total = reference["bytes_over"]
        pulled = rng.randrange(total // 10, total)
        kill_at = rng.randrange(0, total)
        # the resume is of Y, or of X: then the half-written slot takes X's blocks by FLASH_COPY
        again = rng.choice(["y", "y", "x"])
        where = (f"seed {SEED} cut_resume:{i} (X then Y: cable pulled after {pulled} of {total} host bytes, "
                 f"then {again.upper()} cut after {kill_at})")
        flash_file = tmp_path / f"cr{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
            fl = FaultLine(emu.port, rng, kill_at=pulled, on_kill=lambda: None)  # the board stays powered
            try:
                first = flashing.flash([fl.port], images["y"], progress=False)[0]
            finally:
                fl.close()
            pulled_cut = fl.cut
            res, fl = _cut_flash(emu, images, rng, again, kill_at=kill_at)
        CAMPAIGN.count("cut_resume", int(pulled_cut) + int(fl.cut))
        if not fl.cut:
            assert res.ok, f"{where}: no cut in the resume, yet it failed: {res.error}"
        where += f", first flash ok={first.ok}"
        if again == "y":
            _after_cut(flash_file, images, "x", "y", res.ok or first.ok, where)
        else:  # X stays committed unless Y's first flash completed; then X is the new one again
            old = "y" if first.ok else "x"
            _after_cut(flash_file, images, old, "x", res.ok, where)


def test_parallel_flash_with_one_board_cut_and_one_noisy(images, reference, tmp_path):
    """`elk flash --port P1 --port P2`: one board loses power mid-flash, the other sits on a noisy line;
    the healthy board's result does not depend on the dead one, and each result says what its board holds."""
    for i in CAMPAIGN.runs("parallel"):
        rng = CAMPAIGN.rng("parallel", i)
        total = reference["bytes_over"]
        kill_at = rng.randrange(0, total)
        level = 10 ** rng.uniform(-5.0, -3.7)
        rates = {k: level for k in rng.sample(["flip", "drop", "dup"], rng.randint(1, 3))}
        where = f"seed {SEED} parallel:{i} (board 1 cut after {kill_at} of {total} host bytes, board 2 {rates})"
        files = [tmp_path / f"p{i}a.bin", tmp_path / f"p{i}b.bin"]
        with _board(flash=files[0]) as a, _board(flash=files[1]) as b:
            for emu in (a, b):
                assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
            cut = FaultLine(a.port, rng, kill_at=kill_at, on_kill=a.kill)
            noisy = FaultLine(b.port, random.Random(rng.random()), **rates)
            try:
                res = flashing.flash([cut.port, noisy.port], images["y"], progress=False)
            finally:
                cut.close()
                noisy.close()
            CAMPAIGN.count("parallel", int(cut.cut) + int(noisy.hits > 0))
            where += f", {noisy.hits} bytes hit"
            which = check_committed(b, files[1], images, {"x", "y"}, where + " (board 2)", booted=True)
            if res[1].ok:
                assert which == "y", f"{where}: board 2 said OK, runs {which}"
            else:
                assert res[1].error and "\n" not in res[1].error, f"{where}: {res[1].error!r}"
            if not cut.cut:
                assert res[0].ok, f"{where}: no cut, yet board 1 failed: {res[0].error}"
        _after_cut(files[0], images, "x", "y", res[0].ok, where + " (board 1)")


def test_power_cut_mid_flash_on_a_provisioned_board(images, reference, tmp_path):
    """A board with an owner key runs only images signed by it (checked at FLASH_END, COMMIT and every
    power-on): a cut mid-flash of a signed image leaves the signed committed one running, no boot error."""
    from conftest import owner_keys
    from elk import provision, trust

    key = owner_keys(tmp_path, ["owner"])["owner"]
    signed = {k: trust.sign_file(images[k], key["priv"], out_path=tmp_path / f"{k}-signed.elk") for k in ("x", "y")}
    signed["sha"] = {hashlib.sha256(signed[k].read_bytes()).hexdigest(): k for k in ("x", "y")}
    for i in CAMPAIGN.runs("owned_cut"):
        rng = CAMPAIGN.rng("owned_cut", i)
        total = reference["bytes_over"]
        kill_at = rng.randrange(0, total + total // 50)
        where = f"seed {SEED} owned_cut:{i} (provisioned board, signed X then signed Y, cut after {kill_at} host bytes)"
        flash_file = tmp_path / f"oc{i}.bin"
        with _board(flash=flash_file) as emu:
            with connect(emu.port, 0) as link:
                assert provision.provision(link, key["raw"])[1].owned
            assert flashing.flash([emu.port], signed["x"], progress=False)[0].ok
            res, fl = _cut_flash(emu, signed, rng, "y", kill_at=kill_at)
        CAMPAIGN.count("owned_cut", int(fl.cut))
        if not fl.cut:
            assert res.ok, f"{where}: no cut, yet the flash failed: {res.error}"
        with _board(flash=flash_file) as emu:
            check_committed(emu, flash_file, signed, {"y"} if res.ok else {"x", "y"}, where + f", host said ok={res.ok}")
            r = elk("flash", images["y"], "--port", emu.port, "--quiet")  # unsigned: refused, board unchanged
            one_line_error(r, where + ", unsigned Y")
            flash_ok(emu.port, signed["y"], where)
            holds(emu.port, signed, "y", where)
            r = _chat(emu.port)
            assert r.returncode == 0 and r.stdout == reference["text_y"], f"{where}: {r.stdout!r} {r.stderr!r}"


def test_host_stopped_mid_reply(images, reference, tmp_path):
    """elk chat SIGSTOPped mid-reply, then continued (a busy machine, a terminal paused with Ctrl-S): a
    stall the board's resends outlast gives the whole reply; a longer one (long runs only) one line."""
    longest = 20.0 if BUDGET >= 120 else 4.0
    for i in CAMPAIGN.runs("host_stop"):
        rng = CAMPAIGN.rng("host_stop", i)
        after, seconds = rng.uniform(0.3, 1.2), rng.uniform(0.5, longest)
        where = f"seed {SEED} host_stop:{i} (elk chat at 19200 baud SIGSTOPped after {after:.3f} s for {seconds:.2f} s)"
        flash_file = tmp_path / f"hs{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
        with _board(flash=flash_file, baud=19200) as emu:
            proc = subprocess.Popen([sys.executable, "-m", "elk", "chat", "--port", emu.port, "--baud", "19200",
                                     "-p", PROMPT, "--raw", "-n", "40"], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            time.sleep(after)
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(seconds)
            os.kill(proc.pid, signal.SIGCONT)
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise AssertionError(f"{where}: elk chat hung") from None
            CAMPAIGN.count("host_stop")
            r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            if r.returncode != 0:  # only past the board's ~15 s of resends may it give the reply up
                assert seconds > 12, f"{where}: a short stall failed the reply: {r.stderr!r}"
                one_line_error(r, where)
            else:
                assert r.stdout == reference["text_x"], f"{where}: exit 0 with {r.stdout!r}"
            r = _chat(emu.port, "--baud", "19200")
            assert r.returncode == 0 and r.stdout == reference["text_x"], f"{where}: the next chat {r.stderr!r}"


# -- power cuts inside the board's own work ------------------------------------------------------


def test_power_cut_while_the_board_generates(images, reference, tmp_path):
    for i in CAMPAIGN.runs("cut_gen"):
        rng = CAMPAIGN.rng("cut_gen", i)
        delay = rng.uniform(0.0, reference["chat_s"])
        baud = rng.choice([0, 0, 19200, 115200])
        where = f"seed {SEED} cut_gen:{i} (elk chat -n 400 at {baud or 'unthrottled'} baud, cut after {delay:.3f} s)"
        flash_file = tmp_path / f"cg{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
        with _board(flash=flash_file, baud=baud) as emu:
            r = _cut_during(emu, ("chat", "--port", emu.port, "--baud", baud, "-p", PROMPT, "--raw", "-n", 400),
                            delay, where)
        CAMPAIGN.count("cut_gen")
        if r.returncode != 0:
            one_line_error(r, where)
        with _board(flash=flash_file) as emu:
            assert check_committed(emu, flash_file, images, {"x"}, where) == "x", where
            r = _chat(emu.port)
            assert r.returncode == 0 and r.stdout == reference["text_x"], f"{where}: the next chat {r.stdout!r}"


def test_power_cut_around_a_baud_switch(images, reference, tmp_path):
    ups, homes = _ends(reference["frames_slow"], CMD["SET_BAUD"])
    for i in CAMPAIGN.runs("cut_baud"):
        rng = CAMPAIGN.rng("cut_baud", i)
        which = rng.choice(["up", "up", "home"])
        aim = ups if which == "up" else homes
        kill_at = max(1, aim + rng.randrange(-16, 48))
        kill_delay = rng.choice([0.0, rng.uniform(0.0, 0.3)])
        level = 10 ** rng.uniform(-5.0, -3.0) if rng.random() < 0.5 else 0.0
        rates = {k: level for k in rng.sample(["flip", "drop", "dup"], rng.randint(1, 3))} if level else {}
        where = (f"seed {SEED} cut_baud:{i} (115200 baud board, flash switches to 3000000; cut after {kill_at} "
                 f"host bytes, SET_BAUD {which} ends at {aim}, then {kill_delay:.3f} s; noise {rates or 'none'})")
        flash_file = tmp_path / f"cb{i}.bin"
        with _board(flash=flash_file, baud=115200) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
            res, fl = _cut_flash(emu, images, rng, "y", kill_at=kill_at, kill_delay=kill_delay, **rates)
        CAMPAIGN.count("cut_baud", int(fl.cut or not emu.alive()) + int(fl.hits > 0))
        _after_cut(flash_file, images, "x", "y", res.ok, where, baud=115200)


def test_power_cut_at_or_just_after_commit(images, reference, tmp_path):
    commit = _ends(reference["frames_over"], CMD["COMMIT"])[-1]
    for i in CAMPAIGN.runs("cut_commit"):
        rng = CAMPAIGN.rng("cut_commit", i)
        how = rng.choice(["at", "after_ok"])
        kill_delay = rng.uniform(0.0, 0.05)
        where = f"seed {SEED} cut_commit:{i} ({how}: " + (
            f"cut {kill_delay * 1000:.1f} ms after the COMMIT frame reached the board)" if how == "at" else
            "cut as soon as the host said OK)")
        flash_file = tmp_path / f"cc{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
            if how == "at":
                res, _fl = _cut_flash(emu, images, rng, "y", kill_at=commit, kill_delay=kill_delay)
            else:
                res = flashing.flash([emu.port], images["y"], progress=False)[0]
                emu.kill()
                assert res.ok, f"{where}: {res.error}"
        CAMPAIGN.count("cut_commit")
        _after_cut(flash_file, images, "x", "y", res.ok, where)


# -- a throttled line --------------------------------------------------------------------------


def test_throttled_line(images, reference, tmp_path):
    for i in CAMPAIGN.runs("throttled"):
        rng = CAMPAIGN.rng("throttled", i)
        baud = rng.choice(SLOW)
        action = rng.choice(["flash", "slow_flash_cut", "chat", "status", "stop", "flash", "slow_flash_cut", "chat",
                             "status", "stop", "host_kill", "noisy_chat", "noisy_chat", "noisy_flash", "noisy_flash"])
        where = f"seed {SEED} throttled:{i} ({action} at {baud} baud"
        flash_file = tmp_path / f"th{i}.bin"
        with _board(flash=flash_file) as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
        if action == "flash":
            fast = rng.choice([921600, 3000000])
            where += f", the board takes up to {fast})"
            with _board(flash=flash_file, baud=baud, max_baud=fast) as emu:
                r = elk("flash", images["y"], "--port", emu.port, "--quiet", "--connect-baud", baud)
                assert r.returncode == 0, f"{where}: {r.stderr}"
                holds(emu.port, images, "y", where, baud=baud)
                st = json.loads(elk("status", "--json", "--port", emu.port, "--baud", baud).stdout)
                assert st["baud"] == baud, f"{where}: the board was left at {st['baud']} baud"
                r = _chat(emu.port, "--baud", baud)
                assert r.returncode == 0 and r.stdout == reference["text_y"], f"{where}: {r.stdout!r} {r.stderr!r}"
        elif action == "noisy_flash":
            # noise through the switch to the fast rate and back (the slow part is bounded: 57600 at least)
            baud = max(baud, 57600)
            # lower than the unthrottled flashes' 10^-3.7: at 3 Mbaud a line where no 16 KiB frame gets
            # through whole for 2 s loses the board to BAUD_IDLE_MS (it goes home); that one line is
            # allowed, but its slow retries at 57600 took ~40 s of the budget
            level = 10 ** rng.uniform(-5.5, -4.7)
            rates = {k: level for k in rng.sample(["flip", "drop", "dup"], rng.randint(1, 3))}
            where = f"seed {SEED} throttled:{i} (noisy_flash at {baud} baud, up to 3000000, {rates}"
            with _board(flash=flash_file, baud=baud) as emu:
                fl = FaultLine(emu.port, rng, **rates)
                try:
                    r = elk("flash", images["y"], "--port", fl.port, "--quiet", "--connect-baud", baud)
                finally:
                    fl.close()
                where += f", {fl.hits} bytes hit)"
                if r.returncode != 0:
                    one_line_error(r, where)
                which = check_committed(emu, flash_file, images, {"x", "y"}, where, booted=True, baud=baud)
                if r.returncode == 0:
                    assert which == "y", f"{where}: elk flash said OK, the board runs {which}"
                flash_ok(emu.port, images["y"], where, baud=baud)
                holds(emu.port, images, "y", where, baud=baud)
        elif action == "slow_flash_cut":
            # no faster rate: the flash crawls; a power cut after a random time, then a power-on with a
            # board that can go faster: the flash resumes and keeps what the slow one delivered
            delay = rng.uniform(0.2, 1.5)
            where += f", no faster rate, cut after {delay:.3f} s)"
            with _board(flash=flash_file, baud=baud, max_baud=baud) as emu:
                r = _cut_during(emu, ("flash", images["y"], "--port", emu.port, "--quiet", "--connect-baud", baud),
                                delay, where)
            one_line_error(r, where)
            _after_cut(flash_file, images, "x", "y", False, where, baud=baud)
        elif action in ("chat", "status"):
            with _board(flash=flash_file, baud=baud) as emu:
                if action == "chat":
                    r = _chat(emu.port, "--baud", baud)
                    assert r.returncode == 0 and r.stdout == reference["text_x"], f"{where}): {r.stdout!r} {r.stderr!r}"
                else:
                    r = elk("status", "--json", "--port", emu.port, "--baud", baud)
                    assert r.returncode == 0, f"{where}): {r.stderr}"
                    st = json.loads(r.stdout)
                    assert st["baud"] == baud and st["board"] == "host", f"{where}): {st}"
        elif action == "noisy_chat":
            level = 10 ** rng.uniform(-4.0, -2.3)
            rates = {k: level for k in rng.sample(["flip", "drop", "dup"], rng.randint(1, 3))}
            directions = rng.choice([("to_board",), ("to_host",), ("to_board", "to_host")])
            where += f", {rates}, {'+'.join(directions)})"
            with _board(flash=flash_file, baud=baud) as emu:
                fl = FaultLine(emu.port, rng, directions=directions, **rates)
                try:
                    r = _chat(fl.port, "--baud", baud)
                finally:
                    fl.close()
                where = where[:-1] + f", {fl.hits} bytes hit)"
                if r.returncode != 0:
                    one_line_error(r, where)
                else:
                    assert r.stdout == reference["text_x"], f"{where}: {r.stdout!r}"
                r = _chat(emu.port, "--baud", baud)
                assert r.returncode == 0 and r.stdout == reference["text_x"], f"{where}: the next chat {r.stderr!r}"
        elif action == "host_kill":
            # elk flash SIGKILLed while the board may be at the fast rate: nobody switches it back, so the
            # board must return to its console rate by itself (BAUD_IDLE_MS, below the connect budget),
            # where the next command, started at once, looks for it
            delay = rng.uniform(0.3, 1.5)
            where += f", elk flash SIGKILLed after {delay:.3f} s)"
            with _board(flash=flash_file, baud=baud) as emu:
                proc = subprocess.Popen([sys.executable, "-m", "elk", "flash", str(images["y"]), "--port", emu.port,
                                         "--quiet", "--connect-baud", str(baud)], cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(delay)
                proc.kill()
                proc.wait()
                r = elk("status", "--json", "--port", emu.port, "--baud", baud)  # at once, at the console rate
                assert r.returncode == 0, f"{where}: {r.stderr}"
                assert json.loads(r.stdout)["baud"] == baud, f"{where}: the board stays at {r.stdout}"
                which = check_committed(emu, flash_file, images, {"x", "y"}, where, booted=True, baud=baud)
                assert which in ("x", "y"), where
                r = elk("flash", images["y"], "--port", emu.port, "--quiet", "--connect-baud", baud)
                assert r.returncode == 0, f"{where}: the next flash: {r.stderr}"
                holds(emu.port, images, "y", where, baud=baud)
        else:  # the board stops longer than the host waits: one line, then the board goes on
            what = rng.choice(["chat", "status"])
            after = rng.uniform(0.0, 0.5)
            where += f", elk {what}, SIGSTOP after {after:.3f} s for 2.5 s; --reply-timeout 1 --connect-timeout 1)"
            with _board(flash=flash_file, baud=baud) as emu:
                stopper = stop_board(emu, after, 2.5)
                if what == "chat":
                    r = _chat(emu.port, "--reply-timeout", "1", "--connect-timeout", "1", "--baud", baud, n=400)
                else:
                    r = elk("status", "--port", emu.port, "--connect-timeout", "1", "--baud", baud)
                stopper.join()
                if r.returncode != 0:
                    one_line_error(r, where)
                else:
                    assert what == "status" or r.stdout.startswith(reference["text_x"].rstrip("\n")[:30]), where
                assert check_committed(emu, flash_file, images, {"x"}, where, baud=baud) == "x", where
                r = _chat(emu.port, "--baud", baud)
                assert r.returncode == 0 and r.stdout == reference["text_x"], f"{where}: the next chat {r.stderr!r}"
        CAMPAIGN.count("throttled")


# -- the cross-built firmware under qemu -----------------------------------------------------------


def test_qemu_board_keeps_its_image_through_power_cuts(images, reference, tmp_path):
    """One run (qemu is slow): the cross-built qemu-a76 firmware holds the same promises through a power
    cut at a random byte of a flash on a 115200 baud line that switches to 3 Mbaud (strict rates: the
    host's pty rate must match the board's), and a power cut at a random time while it generates."""
    scons("board=qemu-a76", "build/qemu-a76/elk-fw")
    for i in CAMPAIGN.runs("qemu_cut"):
        rng = CAMPAIGN.rng("qemu_cut", i)
        total = reference["bytes_over"]
        kill_at = rng.randrange(0, total)
        delay = rng.uniform(0.0, 1.0)
        where = (f"seed {SEED} qemu_cut:{i} (qemu-a76 at 115200 baud, X then Y, cut after {kill_at} of ~{total} "
                 f"host bytes; then a chat cut after {delay:.3f} s)")
        flash_file = tmp_path / f"q{i}.bin"

        def board(baud=0):
            return Emulator("qemu-a76", baud=baud, max_baud=3000000, flash=flash_file, log=_quiet(),
                            strict_rate=baud > 0)

        with board() as emu:
            assert flashing.flash([emu.port], images["x"], progress=False)[0].ok
        with board(115200) as emu:
            res, fl = _cut_flash(emu, images, rng, "y", kill_at=kill_at)
        with board(115200) as emu:
            check_committed(emu, flash_file, images, {"y"} if res.ok else {"x", "y"}, where, baud=115200)
            flash_ok(emu.port, images["y"], where, baud=115200)
            info = holds(emu.port, images, "y", where, baud=115200)
            assert images["sha"].get(info.slots[info.previous].sha256) == "x", f"{where}: {info}"
            r = _cut_during(emu, ("chat", "--port", emu.port, "--baud", 115200, "-p", PROMPT, "--raw", "-n", 400),
                            delay, where)
            if r.returncode != 0:
                one_line_error(r, where)
        CAMPAIGN.count("qemu_cut", int(fl.cut) + 1)
        with board() as emu:
            assert check_committed(emu, flash_file, images, {"y"}, where) == "y", where
            r = _chat(emu.port)
            assert r.returncode == 0 and r.stdout == reference["text_y"], f"{where}: {r.stdout!r} {r.stderr!r}"
