"""A long prompt's prefill on a board with capability PROGRESS (docs/protocol.md "Prefill progress"): the
board reports tokens prefilled, so the host's patience follows the board's liveness, not a fixed ceiling;
ABORT and a new session's HELLO end a prefill between two batches. The model is stories260K with its
context raised to 4096 (as tests/test_chat_long_prompt.py), the 3732-token prompt prefills in under a
second here, so the host's silence timeout is made smaller than that rather than the prefill longer."""

import signal
import time

import pytest

import elk
from conftest import flashed_board, pack_stories260k_long
from elk import proto_spec as P
from elk.link import NoAnswerError, connect

LONG = "".join(f"Lily and Tom went to the park {i} times to play with the ball. " for i in range(160))
TOKENS = 3732  # BOS + LONG in tok512 (a raw first turn, as the host runtime counts it)
SILENCE = 0.3  # the host's no-answer timeout in these tests, seconds


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return pack_stories260k_long(tmp_path_factory.mktemp("progress"))


@pytest.fixture(scope="module")
def board(host_build, image):
    with flashed_board(image) as emu:
        yield emu


class Stop(Exception):
    pass


def _reports(link, prompt, *, stop_after=None, **kw):
    """Run one reply; return (text, [(seconds after GENERATE, done, total)], seconds to the first piece).
    stop_after=k: raise Stop from the k-th prefill report (as Ctrl-C would interrupt the host)."""
    seen, first = [], []
    t0 = time.monotonic()

    def note(done, total):
        seen.append((time.monotonic() - t0, done, total))
        if stop_after and len(seen) >= stop_after:
            raise Stop

    text = ""
    for piece in link.generate(prompt, temperature=0, raw=True, on_progress=note, **kw):
        first = first or [time.monotonic() - t0]
        text += piece
    return text, seen, first[0]


def test_a_prefill_longer_than_the_silence_timeout_completes_with_progress_reports(board, image):
    with connect(board.port, 0) as link:
        assert link.hello_reply["capabilities"] & P.CAPABILITIES["PROGRESS"]
        text, seen, first = _reports(link, LONG, max_tokens=8, reset=True, idle_timeout=SILENCE)
        st = link.last_stats
    # the prefill really outlasted the timeout that would otherwise have ended it
    assert st.ttft_s > 2 * SILENCE and first > 2 * SILENCE, (st.ttft_s, first)
    assert st.stop == "max_tokens" and st.prompt_tokens == TOKENS and st.ctx_used == TOKENS + 8
    done = [d for _, d, _ in seen]
    assert all(total == TOKENS for _, _, total in seen)
    assert len(done) >= 2 and done == sorted(set(done)) and 0 < done[-1] < TOKENS
    assert all(d % 64 == 0 for d in done)  # whole forward batches of 64 tokens
    times = [t for t, _, _ in seen]
    assert max(b - a for a, b in zip([0.0] + times, times + [first])) < SILENCE
    # slicing the prefill changed no number: the reply is the host runtime's
    with elk.load(str(image)) as m:
        assert len(m.tokenize(LONG)) == TOKENS
        assert text == "".join(m.generate(LONG, max_tokens=8, temperature=0)) and text


def test_firmware_without_progress_keeps_the_silent_prefill_and_its_timeout(board):
    """Without capability PROGRESS (older firmware) the host does not ask for reports, the board sends
    none, and the same timeout ends the same prefill with one line, as before."""
    with connect(board.port, 0) as link:
        link.hello_reply["capabilities"] &= ~P.CAPABILITIES["PROGRESS"]
        t0 = time.monotonic()
        with pytest.raises(NoAnswerError, match=r"no reply from the board \(nothing came from the board for 0.3 s "
                                                r"after GENERATE; this firmware does not report prefill progress"):
            _reports(link, LONG, max_tokens=8, reset=True, idle_timeout=SILENCE)
        assert time.monotonic() - t0 < 5 * SILENCE + 1
        assert link.last_progress is None
        codes, end = set(), time.monotonic() + 10  # the rest of that reply: pieces and STATS, no PROGRESS
        while P.EVENTS["STATS"] not in codes and time.monotonic() < end:
            link.pump(0.05)
            codes |= {ev.code for ev in link.events}
    assert P.EVENTS["STATS"] in codes and P.EVENTS["PROGRESS"] not in codes


def test_abort_during_prefill_stops_it_and_drops_the_prompt_from_the_conversation(board):
    with connect(board.port, 0) as link:
        full = _full_prefill_s(link)
        # the reference: two turns of one conversation
        first = "".join(link.generate("Once upon a time", max_tokens=8, temperature=0, raw=True, reset=True))
        want = "".join(link.generate(" Tom", max_tokens=8, temperature=0, raw=True))
        want_ctx = link.last_stats.ctx_used
        # the same two turns with a long prompt aborted in between
        assert "".join(link.generate("Once upon a time", max_tokens=8, temperature=0, raw=True, reset=True)) == first
        used = link.info().ctx_used
        t0 = time.monotonic()
        with pytest.raises(Stop):
            _reports(link, LONG, max_tokens=8, stop_after=1)
        done, total = link.last_progress
        link.abort()
        st = link.drain_generation(timeout=10)
        took = time.monotonic() - t0
        assert st is not None and st.stop == "aborted" and st.gen_tokens == 0 and st.status == 0
        assert st.prompt_tokens == total == TOKENS - 1 and done < total  # no BOS within a conversation
        assert st.ctx_used == used == link.info().ctx_used  # nothing of the long prompt stayed
        assert took < st.total_s + 1 and st.total_s < 0.7 * full
        again = "".join(link.generate(" Tom", max_tokens=8, temperature=0, raw=True))
        assert again == want and link.last_stats.ctx_used == want_ctx


def _full_prefill_s(link):
    "".join(link.generate(LONG, max_tokens=1, temperature=0, raw=True, reset=True))
    return link.last_stats.ttft_s


def test_a_new_session_ends_a_prefill_at_once(board):
    """A host that vanished mid-prefill (its HELLO-less GENERATE left running): the next session's
    HELLO ends the prefill between two batches and the board answers the new session at once."""
    with connect(board.port, 0) as link:
        full = _full_prefill_s(link)
        with pytest.raises(Stop):
            _reports(link, LONG, max_tokens=8, reset=True, stop_after=1)
    t0 = time.monotonic()
    with connect(board.port, 0) as link:
        assert link.info().ctx_used == 0  # the unfinished prompt is not in the conversation
        assert "".join(link.generate("Once upon a time", max_tokens=4, temperature=0, raw=True, reset=True))
    assert time.monotonic() - t0 < 0.5 * full, (time.monotonic() - t0, full)


def test_a_board_that_stops_mid_prefill_is_one_line_in_bounded_time(board):
    """The board hangs after its first report (SIGSTOP): the host gives up SILENCE seconds later with one
    line saying where the prefill was, instead of waiting for a prefill that could still be running."""
    stopped = []

    def hang(done, total):
        if not stopped:
            board.proc.send_signal(signal.SIGSTOP)
            stopped.append((time.monotonic(), done, total))

    try:
        with connect(board.port, 0) as link:
            with pytest.raises(NoAnswerError) as e:
                list(link.generate(LONG, max_tokens=8, temperature=0, raw=True, reset=True, idle_timeout=SILENCE,
                                   on_progress=hang))
            waited = time.monotonic() - stopped[0][0]
    finally:
        board.proc.send_signal(signal.SIGCONT)
    _, done, total = stopped[0]
    assert str(e.value) == (f"{board.port}: the board stopped answering during the prompt's prefill "
                            f"({done}/{total} tokens; nothing came from the board for 0.3 s)")
    assert SILENCE <= waited < SILENCE + 2
    with connect(board.port, 0) as link:  # woken up, the board serves a new session
        assert "".join(link.generate("Once upon a time", max_tokens=4, temperature=0, raw=True, reset=True))


def test_elk_chat_stats_shows_prefill_progress_on_a_terminal_only(board):
    """`elk chat --stats` with stderr on a terminal (a real pty) rewrites `(prefill N/3732 tokens)` in place
    and erases it before the reply; with stderr on a pipe it prints no progress, only the stats line."""
    import os
    import pty
    import re
    import subprocess
    import sys

    from conftest import ROOT, read_pty_to_end, run_elk

    args = ["chat", "--port", board.port, "--baud", "0", "-p", LONG, "--raw", "-n", "4", "--stats"]
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "elk", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        err = read_pty_to_end(master)
        out = proc.communicate(timeout=60)[0]
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    done = [int(d) for d in re.findall(rb"\r\(prefill (\d+)/3732 tokens\)", err)]
    assert len(done) >= 2 and done == sorted(set(done)) and done[-1] < 3732, err
    last = err.rindex(b"(prefill ")
    erase = re.search(rb"\r +\r", err[last:])
    assert erase and b"prompt 3732 tokens" in err[last + erase.end():]
    piped = run_elk(*args)
    assert piped.returncode == 0 and piped.stdout == out.decode() and out.strip()
    assert "prefill" not in piped.stderr and "prompt 3732 tokens" in piped.stderr


def test_ctrl_c_in_elk_chat_stops_a_prefill_and_the_conversation_goes_on(board):
    """The interactive console with its output on a terminal: once `(prefill ...)` shows, SIGINT (Ctrl-C)
    stops the prefill; ` ^C` comes before the prefill could have ended, /info shows none of the prompt in
    the context, and the next line is answered."""
    import os
    import pty
    import subprocess
    import sys

    from conftest import ROOT

    with connect(board.port, 0) as link:
        full = _full_prefill_s(link)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "elk", "chat", "--port", board.port, "--baud", "0", "-n", "4",
                             "--temperature", "0"], cwd=ROOT, stdin=subprocess.PIPE, stdout=slave, stderr=slave)
    os.close(slave)
    buf = b""

    def until(marker, timeout=30):
        nonlocal buf
        end = time.monotonic() + timeout
        while marker not in buf and time.monotonic() < end:
            try:
                buf += os.read(master, 4096)
            except OSError:
                break
        assert marker in buf or marker == b"\xff", buf[-300:]

    try:
        until(b"> ")
        proc.stdin.write(LONG.encode() + b"\n")
        proc.stdin.flush()
        until(b"(prefill ")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        until(b" ^C")
        took = time.monotonic() - t0
        proc.stdin.write(b"/info\nOnce upon a time\n/quit\n")
        proc.stdin.flush()
        until(b"\xff", 30)  # never sent: read until the program ends and closes the terminal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert took < 0.6 * full, (took, full)
    assert b"model: context 0/4096" in buf
    tail = buf.split(b"model: context 0/4096", 1)[1]
    # the next line is answered as on a fresh context (greedy: ", there was a"), then /quit
    assert proc.wait(timeout=30) == 0 and tail.endswith(b"\r\n> , there was a\r\n> ")


def test_a_later_turn_prefilled_in_slices_matches_the_host_runtime(board, image):
    """A reply stopped by ABORT leaves its last token still to be run: the next turn's first slice takes
    it and 63 prompt tokens, so the batches start where the host runtime's one call starts them and the
    reply is the same (reports count the turn's own tokens: 63, 127, ...)."""
    second = LONG[:4000]
    with connect(board.port, 0) as link:
        a = ""
        for piece in link.generate("Once upon a time", max_tokens=3000, temperature=0, raw=True, reset=True):
            if not a:
                link.abort()
            a += piece
        first = link.last_stats
        b, seen, _ = _reports(link, second, max_tokens=8)
        st = link.last_stats
    assert first.stop == "aborted" and first.ctx_used == 5 + first.gen_tokens
    with elk.load(str(image)) as m:
        steps = m.generate_tokens("Once upon a time", max_tokens=first.gen_tokens + 1, temperature=0)
        want_a = b"".join(piece for _, piece in (next(steps) for _ in range(first.gen_tokens))).decode()
        ids = m.tokenize(second, bos=False)
        want_b = "".join(m.generate(ids, max_tokens=8, temperature=0, keep_context=True))
    assert (a, b) == (want_a, want_b) and b
    assert st.prompt_tokens == len(ids) and seen and all(d % 64 == 63 for _, d, _ in seen)
