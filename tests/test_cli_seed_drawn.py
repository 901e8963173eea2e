"""Without --seed, `elk run` and `elk chat` (one prompt or a session, over the serial link to an emulated
board) both draw a random seed and say it, so a sampled reply can be repeated with --seed N; a given
seed, or a greedy reply (temperature 0, where the seed changes nothing), is not announced."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT, flashed_board, pack_stories260k, run_elk

NOTE = re.compile(r"^elk: seed (\d+) \(drawn at random; --seed \1 repeats this (run|reply)\)$", re.M)
SAMPLED = ["-n", "40", "--temperature", "1.2", "--top-p", "1", "--top-k", "0"]


@pytest.fixture(scope="module")
def image(tmp_path_factory, host_build):
    return pack_stories260k(tmp_path_factory.mktemp("seed") / "s.elk", quant="q8_0")


@pytest.fixture(scope="module")
def board(image):
    with flashed_board(image) as emu:
        yield emu


def _seed(r, what):
    assert r.returncode == 0, r.stderr
    found = NOTE.findall(r.stderr)
    assert len(found) == 1 and found[0][1] == what, r.stderr
    return found[0][0]


def test_elk_run_without_seed_draws_one_says_it_and_it_repeats_the_text(image):
    a = run_elk("run", image, "-p", "Once upon a time", *SAMPLED)
    b = run_elk("run", image, "-p", "Once upon a time", *SAMPLED)
    sa, sb = _seed(a, "run"), _seed(b, "run")
    assert sa != sb  # 64 random bits each
    again = run_elk("run", image, "-p", "Once upon a time", *SAMPLED, "--seed", sa)
    assert again.returncode == 0 and again.stdout == a.stdout and not NOTE.search(again.stderr)
    greedy = run_elk("run", image, "-p", "Once upon a time", "-n", "5", "--temperature", "0")
    assert greedy.returncode == 0 and "seed" not in greedy.stderr


def _chat(board, *args):
    return run_elk("chat", "--port", board.port, "--baud", "0", "-p", "Once upon a time", *args)


def test_elk_chat_without_seed_draws_one_says_it_and_it_repeats_the_reply(board):
    a, b = _chat(board, *SAMPLED), _chat(board, *SAMPLED)
    sa, sb = _seed(a, "reply"), _seed(b, "reply")
    assert sa != sb and a.stdout.strip() and b.stdout.strip()
    assert a.stdout != b.stdout  # the board really sampled with two seeds (40 tokens at temperature 1.2)
    again = _chat(board, *SAMPLED, "--seed", sa)
    assert again.returncode == 0 and again.stdout == a.stdout and not NOTE.search(again.stderr)
    greedy = _chat(board, "-n", "5")  # -p is greedy by default
    assert greedy.returncode == 0 and "seed" not in greedy.stderr


def _session(board, *args):
    r = subprocess.run([sys.executable, "-m", "elk", "chat", "--port", board.port, "--baud", "0", "-n", "40",
                        "--temperature", "1.2", "--top-p", "1", *args], input="Once upon a time\n/quit\n",
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_an_interactive_session_without_seed_says_its_seed_in_the_greeting(board):
    text = _session(board)
    m = re.search(r"\(seed (\d+), drawn at random: --seed \1 repeats this session\); /help for commands", text)
    assert m, text
    reply = text.split("> ", 1)[1]
    again = _session(board, "--seed", m.group(1))
    assert "drawn at random" not in again and again.split("> ", 1)[1] == reply and reply.strip()


def test_a_refused_prompt_with_a_drawn_seed_is_still_one_line(board, image):
    r = run_elk("chat", "--port", board.port, "--baud", "0", "-p", "a" * 40000, "--temperature", "1")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "40000 bytes" in r.stderr, r.stderr
    r = run_elk("run", image, "-p", "Once upon a time " * 200, "--temperature", "1")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "prompt is" in r.stderr, r.stderr
