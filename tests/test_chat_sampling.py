"""Sampling chosen per request over the link: `elk chat` options and the interactive /temp /top-p /top-k
/seed /tokens travel in every GENERATE and the board samples with them (its text equals `elk run`'s on the
same image, prompt and settings); the board's own text console has `set` for the same values, checked
with the same rules as GENERATE, which refuses bad values with a reason (test_chat_console)."""

import io
import time

import pytest
import serial

from conftest import flashed_board, pack_stories260k, read_until, run_elk
from elk import chat
from elk.link import connect

GREEDY = ", there was a little girl named Lily. She loved to play outside in the park."


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return pack_stories260k(tmp_path_factory.mktemp("img") / "s260.elk")


@pytest.fixture(scope="module")
def board(host_build, image):
    with flashed_board(image) as emu:
        yield emu


def _host_run(image, *opts):
    r = run_elk("run", image, "-p", "Once upon a time", *opts)
    assert r.returncode == 0, r.stderr
    return r.stdout.removeprefix("Once upon a time").rstrip("\n")


@pytest.mark.parametrize("seed", ["7", "8"])
def test_chat_options_reach_the_boards_sampler(board, image, seed):
    opts = ("-n", "30", "--temperature", "1.5", "--top-p", "0.95", "--top-k", "40", "--seed", seed)
    r = run_elk("chat", "--port", board.port, "--baud", "0", "-p", "Once upon a time", "--raw", *opts)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n") == _host_run(image, *opts)
    assert not r.stdout.startswith(GREEDY[:40])  # hot enough to leave the greedy path


def test_seeds_and_top_k_change_the_reply_and_top_k_1_is_greedy(board):
    def reply(*opts):
        r = run_elk("chat", "--port", board.port, "--baud", "0", "-p", "Once upon a time", "--raw", "-n", "30",
                    "--temperature", "1.5", *opts)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert reply("--seed", "7") == reply("--seed", "7") != reply("--seed", "8")
    assert reply("--seed", "7", "--top-k", "1").startswith(GREEDY[:40])


def test_interactive_settings_apply_to_the_next_turns(board, image):
    script = ("/temp 1.5\n/top-p 0.95\n/top-k 40\n/seed 7\n/tokens 30\n/sampling\nOnce upon a time\n"
              "/top-p 2\n/top-k -1\n/seed x\n/tokens 0\n/temp nan\n/reset\n/temp 0\n/tokens 5\nOnce upon a time\n"
              "/quit\n")
    out = io.StringIO()
    with connect(board.port, 0) as link:
        rc = chat.Console(link, chat.Sampling(raw=True), inp=io.StringIO(script), out=out).run()
    text = out.getvalue()
    assert rc == 0
    assert "(temperature 1.5, top-p 0.95, top-k 40, seed 7, at most 30 tokens)" in text
    hot = _host_run(image, "-n", "30", "--temperature", "1.5", "--top-p", "0.95", "--top-k", "40", "--seed", "7")
    assert hot in text
    for usage in ("usage: /top-p P with 0 < P <= 1", "usage: /top-k K, a whole number >= 0",
                  "usage: /seed N, a whole number", "usage: /tokens N, a whole number >= 1",
                  "usage: /temp X with 0 <= X <= 100"):
        assert usage in text
    # greedy, 5 tokens: the start of the greedy story and no more
    last = text.rsplit("at most 5 tokens)\n", 1)[1]
    assert last.startswith("> , there was a little") and "girl named" not in last



def test_text_console_set_changes_the_sampling_and_refuses_bad_values(board):
    with connect(board.port, 0) as link:
        assert link.info().running == 0
    time.sleep(1.6)  # the console ignores text for a moment after the last frame
    with serial.Serial(board.port, 115200, timeout=0.2) as term:
        term.reset_input_buffer()
        term.write(b"set\r")
        assert b"temp 0.800, top-p 0.900, top-k 0, tokens 256, seed 0 (a new one every reply)" in \
            read_until(term, b"\r\n> ")
        term.write(b"set top-p 2\r")
        assert b"sampling: top-p must be above 0 and at most 1 (1 = off)" in read_until(term, b"\r\n> ")
        term.write(b"set temp hot\r")
        assert b"usage: set temp|top-p|top-k|tokens|seed VALUE" in read_until(term, b"\r\n> ")
        term.write(b"set colour 3\r")
        assert b"set: temp (0 = greedy), top-p" in read_until(term, b"\r\n> ")
        term.write(b"set temp 5000000\r")  # any finite temperature is valid; its milli count passes 2^32
        assert b"temp 5000000.000, top-p" in read_until(term, b"\r\n> ")
        term.write(b"set temp 9999999999999999999\r")
        assert b"temp 1e15 or more, top-p" in read_until(term, b"\r\n> ")
        term.write(b"set temp 0\r")
        read_until(term, b"\r\n> ")
        term.write(b"set tokens 5\r")
        assert b"temp 0.000, top-p 0.900, top-k 0, tokens 5, seed 0" in read_until(term, b"\r\n> ")
        term.write(b"reset\r")
        read_until(term, b"(new conversation)\r\n> ")
        term.write(b"Once upon a time\r")
        seen = read_until(term, b"\r\n> ", after=b"Once upon a time")
        reply = seen.split(b"Once upon a time", 1)[1]
        assert reply.startswith(b"\r\n, there was a little") and b"girl named" not in reply, reply
        term.write(b"set seed 42\r")
        assert b"seed 42" in read_until(term, b"\r\n> ")


@pytest.mark.parametrize("value", ["0", "-1", "4294967296"])
def test_chat_token_limit_out_of_range_is_one_usage_line_before_connecting(value):
    """-n 0 used to reach the board, which prefilled the prompt and printed nothing (exit 0); elk run,
    /tokens and the console's set refuse it. The port does not exist: the option is checked first."""
    r = run_elk("chat", "--port", "/dev/elk-no-such-port", "-p", "Once upon a time", "-n", value)
    assert r.returncode == 2 and r.stdout == ""
    assert f"argument -n/--max-tokens: {value} is outside [1, 4294967295]" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
