"""GENERATE with a limit of 0 tokens (docs/protocol.md "Sampling"): the board reads the turn into the
context and replies with no text, STATS stop MAX_TOKENS; the prompt stays in the conversation, and a
prompt that fills the context exactly is taken in (no free position is needed when none is asked for).
`elk chat`/`elk demo` never send 0 (-n is 1..); this is the wire behaviour other hosts see."""

import os

import pytest

import elk
from conftest import fixture_path
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect

PROMPT = "Once upon a time"  # BOS + 4 tokens in stories260K's vocabulary


@pytest.fixture(scope="module")
def board(host_build, tmp_path_factory):
    from elk.convert.pack import pack

    image = tmp_path_factory.mktemp("zero") / "s260.elk"
    pack(str(fixture_path("stories260K.bin")), str(image), tokenizer=str(fixture_path("tok512.bin")))
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        emu.image = image
        yield emu


def test_generate_limit_0_reads_the_prompt_in_and_replies_with_nothing(board):
    with connect(board.port, 0) as link:
        assert list(link.generate(PROMPT, max_tokens=0, raw=True, reset=True)) == []
        st = link.last_stats
        assert (st.stop, st.status, st.prompt_tokens, st.gen_tokens, st.ctx_used) == ("max_tokens", 0, 5, 0, 5)
        assert link.info().ctx_used == 5
        # the prompt stayed: the next turn continues after it, the context counts both turns
        reply = "".join(link.generate(" there was", max_tokens=10, raw=True))
        st2 = link.last_stats
        assert reply and st2.gen_tokens == 10
        assert st2.ctx_used == 5 + st2.prompt_tokens + 10


def test_generate_limit_0_takes_a_prompt_that_fills_the_context_exactly(board):
    text = PROMPT + " the cat" * 169
    with elk.load(board.image) as m:
        assert len(m.tokenize(text)) == 512  # BOS included, as the board encodes a raw first turn
    with connect(board.port, 0) as link:
        assert list(link.generate(text, max_tokens=1, raw=True, reset=True)) == []
        st = link.last_stats  # one token asked for: no room, refused, context unchanged
        assert (st.stop, st.prompt_tokens, st.ctx_used) == ("context_full", 512, 0)
        assert list(link.generate(text, max_tokens=0, raw=True, reset=True)) == []
        st = link.last_stats
        assert (st.stop, st.status, st.prompt_tokens, st.gen_tokens, st.ctx_used) == ("max_tokens", 0, 512, 0, 512)
