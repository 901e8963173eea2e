"""`elk chat` against an emulated board with stories260K: one-shot greedy text for scripts, the
interactive console's commands (/temp, /stats, /reset, /info, /quit) driven through pipes, and ABORT
stopping a reply without ending the session."""

import io
import os
import subprocess
import sys

import pytest

from conftest import ROOT, flashed_board, pack_stories260k
from elk import chat
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect

GREEDY = ", there was a little girl named Lily. She loved to play outside in the park."


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return pack_stories260k(tmp_path_factory.mktemp("img") / "s260.elk")


@pytest.fixture(scope="module")
def board(host_build, image):
    with flashed_board(image) as emu:
        yield emu


def test_chat_one_shot_prints_the_greedy_continuation(board):
    r = subprocess.run([sys.executable, "-m", "elk", "chat", "--port", board.port, "-p", "Once upon a time",
                        "-n", "40", "--stats"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(GREEDY)
    assert "tokens/s" in r.stderr and "time to first token" in r.stderr and "context 45/512" in r.stderr


def test_chat_console_commands_through_pipes(board):
    script = "/temp 0\nOnce upon a time\n/stats\n/info\n/temp abc\n/reset\nOnce upon a time\n/quit\nnever read\n"
    out = io.StringIO()
    with connect(board.port, 0) as link:
        s = chat.Sampling(max_tokens=20)
        rc = chat.Console(link, s, inp=io.StringIO(script), out=out).run()
    text = out.getvalue()
    assert rc == 0
    assert "(temperature 0, top-p 0.9, top-k 0, seed 0, at most 20 tokens)" in text
    assert text.count(GREEDY[:40]) == 2  # greedy both times: /reset started a new conversation
    assert "20 tokens" in text and "context 25/512" in text  # /stats after the first reply
    assert "slot A: stories260K" in text and "[active, running]" in text  # /info
    assert "usage: /temp X" in text
    assert "never read" not in text


def test_chat_console_names_an_unknown_command_and_sends_nothing(board):
    out = io.StringIO()
    with connect(board.port, 0) as link:
        before = link.info().ctx_used
        rc = chat.Console(link, chat.Sampling(max_tokens=5), inp=io.StringIO("/tmep 0\n/help\n"), out=out).run()
        assert link.info().ctx_used == before  # no prompt went to the model
    text = out.getvalue()
    assert rc == 0 and "unknown command /tmep" in text and text.count("/temp X") == 2


def test_chat_continues_the_conversation_without_reset(board):
    with connect(board.port, 0) as link:
        "".join(link.generate("Once upon a time", max_tokens=10, temperature=0, reset=True))
        first = link.last_stats
        "".join(link.generate(" and then", max_tokens=10, temperature=0))
        second = link.last_stats
    assert first.ctx_used == 15 and second.ctx_used == first.ctx_used + second.prompt_tokens + 10


@pytest.fixture(scope="module")
def slow_board(host_build, image, tmp_path_factory):
    """stories260K on a 19200-baud board: the 341-token greedy story (~1.5 KB of text) takes about a
    second to stream, so an abort or Ctrl-C reliably lands in the middle of it."""
    flash = tmp_path_factory.mktemp("slow") / "board.bin"
    with Emulator("host", baud=0, flash=flash, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
    with Emulator("host", baud=19200, flash=flash, log=open(os.devnull, "w")) as slow:
        yield slow


def test_abort_stops_a_reply_but_not_the_session(slow_board):
    with connect(slow_board.port, 19200) as link:
        pieces = []
        for piece in link.generate("Once upon a time", max_tokens=400, temperature=0, raw=True, reset=True):
            pieces.append(piece)
            if len(pieces) == 2:
                link.abort()
                break
        stats = link.drain_generation()
        assert stats is not None and stats.stop == "aborted" and stats.gen_tokens < 300
        text = "".join(link.generate("Once upon a time", max_tokens=30, temperature=0, raw=True, reset=True))
        assert text.startswith(GREEDY[:50]) and link.last_stats.stop == "max_tokens"


def test_chat_refuses_a_board_without_a_model(host_build):
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as empty:
        r = subprocess.run([sys.executable, "-m", "elk", "chat", "--port", empty.port, "-p", "hi"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "runs no model" in r.stderr and "Traceback" not in r.stderr


def test_ctrl_c_stops_the_reply_but_not_the_chat_session(slow_board):
    """SIGINT (what Ctrl-C sends) in the middle of a streamed reply: ' ^C', then the session goes on."""
    _interrupt_a_reply(slow_board.port)


def _interrupt_a_reply(port):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "elk", "chat", "--port", port, "--temperature", "0",
                             "-n", "500"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        proc.stdin.write("Once upon a time\n")
        proc.stdin.flush()
        seen = ""
        while "Lily" not in seen:  # the reply is streaming
            seen += proc.stdout.read(1)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        out, err = proc.communicate("/stats\n/quit\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert " ^C" in out and "stopped: aborted" in out and "Traceback" not in err


def test_a_new_session_takes_over_from_one_that_vanished_mid_reply(board):
    """A chat killed while the board streams leaves the board waiting for acknowledgements; the next
    client's HELLO ends that reply and the new session works at once."""
    stale = connect(board.port, 0)
    gen = stale.generate("Once upon a time", max_tokens=400, temperature=0, raw=True, reset=True)
    next(gen)
    stale.close()  # gone without ABORT or acknowledging the rest
    with connect(board.port, 0) as link:
        text = "".join(link.generate("Once upon a time", max_tokens=20, temperature=0, raw=True, reset=True))
    assert text.startswith(GREEDY[:40])


def test_a_prompt_longer_than_the_boards_prompt_buffer_is_refused_in_one_line(board):
    """Prompts longer than one frame are staged across frames (test_chat_long_prompt), up to the 32 KiB the
    board's INFO announces; a longer one is refused before anything is sent."""
    r = subprocess.run([sys.executable, "-m", "elk", "chat", "--port", board.port, "-p", "word " * 7000],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert "the prompt is 35000 bytes; the board takes at most 32768 bytes of prompt" in r.stderr
    assert r.stderr.count("\n") == 1


def test_a_typed_line_longer_than_the_board_takes_is_refused_and_the_session_goes_on(board):
    """`elk chat` reading a pipe: a line over the board's prompt limit (32 KiB, several frames) is one
    line in the console, nothing is sent, and the next line gets its reply in the same session."""
    script = "/temp 0\n" + "word " * 7000 + "\nOnce upon a time\n/quit\n"
    r = subprocess.run([sys.executable, "-m", "elk", "chat", "--port", board.port, "--baud", "0", "-n", "20",
                        "--raw"], input=script, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    refused = [ln for ln in r.stdout.splitlines() if "the line is 34999 bytes" in ln]
    assert len(refused) == 1 and "at most 32768 bytes" in refused[0] and "not sent" in refused[0], r.stdout
    assert "word word" not in r.stdout
    after = r.stdout[r.stdout.index(refused[0]):]
    assert GREEDY[:30] in after  # the session went on and the next prompt got its reply


class TerminalChat:
    """`elk chat <args>` with a pseudo-terminal as its controlling tty (as a user types into it): the
    kernel's line discipline, echo and Ctrl-C are real. until() reads its output up to a marker."""

    def __init__(self, *args):
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec elk chat with the pty as its terminal
            os.chdir(ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "elk", "chat", *args])
        self.seen = b""

    def until(self, marker, timeout=30):
        import select
        import time

        end = time.monotonic() + timeout
        while marker not in self.seen and time.monotonic() < end:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.fd, 65536)
                except OSError:
                    break
        assert marker in self.seen, self.seen[-800:]

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def test_a_line_typed_past_the_terminal_limit_is_refused_not_sent_cut(board):
    """In a real terminal (pty as elk chat's controlling tty) the kernel keeps 4095 bytes of a typed line
    and drops the rest: such a line is one refusal line, not a silently cut prompt, and the chat goes on."""
    with TerminalChat("--port", board.port, "--baud", "0", "--temperature", "0", "-n", "20", "--raw") as t:
        t.until(b"/help for commands\r\n> ")
        line = b"word " * 1800
        for i in range(0, len(line), 512):  # typed, not one write: the terminal echoes as it goes
            t.write(line[i:i + 512])
            t.until(line[i:i + 512][-20:], 10)
        t.write(b"\r")
        t.until(b"so its end was cut: not sent")
        tail = t.seen[t.seen.index(b"so its end was cut"):]
        t.write(b"Once upon a time\r")
        t.until(b"Lily")
        t.write(b"/quit\r")
        assert t.exit_code() == 0
        assert b"prompt is" not in tail and b"Traceback" not in t.seen  # nothing reached the board


def test_reset_reboots_the_active_slot_and_forgets_conversation_and_flash_session(board):
    import hashlib
    import struct

    from elk.link import CMD

    with connect(board.port, 0) as link:
        "".join(link.generate("Once upon a time", max_tokens=5, temperature=0, reset=True))
        assert link.info().ctx_used == 10
        link.request(CMD["FLASH_BEGIN"], struct.pack("<Q", 4096) + hashlib.sha256(b"x").digest())
        link.request(CMD["RESET"])
        info = link.info()
        assert info.ctx_used == 0 and info.running == info.active == 0
        with pytest.raises(Exception, match="FLASH_DATA.*ELK_E_STATE"):
            link.request(CMD["FLASH_DATA"], struct.pack("<Q", 0) + b"y" * 64)
        text = "".join(link.generate("Once upon a time", max_tokens=12, temperature=0, raw=True))
    assert text.startswith(GREEDY[:30])


def test_board_vanishing_mid_reply_is_one_line(host_build, image, tmp_path):
    """The emulated board stops while `elk chat -p` streams: the text so far, a newline, then one error
    line saying the connection was lost (not pyserial's wording), exit 2."""
    flash = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
    emu = Emulator("host", baud=4800, flash=flash, log=open(os.devnull, "w")).start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "elk", "chat", "--port", emu.port, "-p", "Once upon a time",
                                 "-n", "400"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.read(20)  # the reply is streaming
        emu.stop()
        out, err = proc.communicate(timeout=30)
    finally:
        emu.stop()
    assert proc.returncode == 2 and out.endswith("\n")
    assert err.count("\n") == 1 and "connection lost" in err and "Traceback" not in err, err


def test_ctrl_c_typed_in_a_terminal_stops_the_reply_not_the_console(slow_board):
    """`elk chat` in a real terminal (pty as its controlling tty): typing Ctrl-C (0x03, turned into SIGINT
    by the terminal) mid-reply prints ' ^C' and a new prompt; /stats says aborted; /quit exits 0."""
    with TerminalChat("--port", slow_board.port, "--baud", "19200", "--temperature", "0", "-n", "500") as t:
        t.until(b"/help for commands\r\n> ")
        t.write(b"Once upon a time\r")
        t.until(b"Lily")  # the reply is streaming
        t.write(b"\x03")
        t.until(b" ^C\r\n> ")
        t.write(b"/stats\r")
        t.until(b"stopped: aborted")
        t.write(b"/quit\r")
        assert t.exit_code() == 0
        assert b"Traceback" not in t.seen


@pytest.mark.parametrize("args,message", [
    (("--temperature", "-1"), "temperature must be 0 (greedy) or more, got -1.0"),
    (("--temperature", "nan"), "temperature must be 0 (greedy) or more, got nan"),
    (("--top-p", "2"), "top-p must be above 0 and at most 1 (1 = off), got 2.0"),
    (("--top-k", "-3"), "top-k must be 0 (off) or more, got -3"),
    (("--repeat-penalty", "0"), "the repeat penalty must be above 0 (1 = off), got 0.0"),
    (("--seed", "-1"), "the seed must be 0 to 2^64-1, got -1"),
])
def test_chat_refuses_sampling_values_out_of_range_in_one_line(board, args, message):
    r = subprocess.run([sys.executable, "-m", "elk", "chat", "--port", board.port, "-p", "hi", *args],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == "" and r.stderr == f"elk: error: sampling: {message}\n", r.stderr


def test_board_refuses_out_of_range_sampling_with_a_reason(board):
    """A host that skips the checks: the board answers GENERATE with E_RANGE and names the value that is
    wrong (it used to start the turn and report it as 'context full'), and keeps serving."""
    import struct

    from elk.link import CMD

    inf, nan = float("inf"), float("nan")
    cases = [((-1.0, 1.0, 0, 1.0, 64), "temperature must be a finite number"),
             ((nan, 1.0, 0, 1.0, 64), "temperature must be a finite number"),
             ((inf, 1.0, 0, 1.0, 64), "temperature must be a finite number"),
             ((0.0, 0.0, 0, 1.0, 64), "top-p must be above 0 and at most 1"),
             ((0.0, 1.5, 0, 1.0, 64), "top-p must be above 0 and at most 1"),
             ((0.0, 1.0, 0xFFFFFFFF, 1.0, 64), "top-k must be 0 (off) to 2147483647"),
             ((0.0, 1.0, 0, -2.0, 64), "repeat penalty must be a finite number above 0"),
             ((0.0, 1.0, 0, inf, 64), "repeat penalty must be a finite number above 0"),
             ((0.0, 1.0, 0, 1.0, 0x80000000), "repeat window must be 0 to 2147483647 tokens")]
    with connect(board.port, 0) as link:
        for (temp, top_p, top_k, penalty, window), why in cases:
            head = struct.pack("<IIffIfIQ", 0, 5, temp, top_p, top_k, penalty, window, 0)
            r = link.request(CMD["GENERATE"], head + b"hi", check=False)
            assert struct.unpack_from("<h", r)[0] == -9 and r[2:].startswith(b"sampling: " + why.encode()), r
        text = "".join(link.generate("Once upon a time", max_tokens=10, temperature=0, raw=True, reset=True))
    assert text.startswith(GREEDY[:30])
