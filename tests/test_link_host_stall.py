"""A host that stops reading for a while in the middle of a reply (a busy machine, a terminal paused with
Ctrl-S, a laptop lid): the board resends its unacknowledged event with a timeout growing by half each
time, as the host does for requests (docs/protocol.md section 3), so a stall of a few seconds costs
nothing; it gave up after ~2 s and cut the reply. A stall longer than its ~15 s of resends still ends
the reply, and then `elk chat` says so in one line (exit 2) instead of printing the cut text with exit 0;
when the generation itself ended during the stall, STATS said 'eos' though the queued end of the reply
never went out. Found with elk chat SIGSTOPped mid-reply (the multi-fault campaign's host_stop)."""

import time

import pytest

from conftest import flashed_board, pack_stories260k
from elk.link import ReplyCutError, connect

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def board(host_build, tmp_path_factory):
    image = pack_stories260k(tmp_path_factory.mktemp("stall") / "x.elk", quant="q4_0")
    with flashed_board(image) as emu:
        yield emu


def _reply(link, stall_after=None, stall_s=0.0):
    text = ""
    for piece in link.generate(PROMPT, max_tokens=300, temperature=0, raw=True, reset=True):
        text += piece
        if stall_after is not None and len(text) >= stall_after and stall_s:
            time.sleep(stall_s)  # read nothing, acknowledge nothing
            stall_s = 0.0
    return text


def test_a_host_stalled_for_4_s_mid_reply_gets_the_whole_reply(board):
    with connect(board.port, 0) as link:
        clean = _reply(link)
        whole = link.last_stats
        assert whole.stop in ("eos", "max_tokens") and whole.gen_tokens > 100
        stalled = _reply(link, stall_after=1, stall_s=4.0)
        assert link.last_stats.stop == whole.stop and link.last_stats.gen_tokens == whole.gen_tokens
    assert stalled == clean


def test_a_reply_the_board_gave_up_on_is_one_error_line_not_a_short_success(board):
    """The board's resends span ~15 s at this rate; a 17 s stall outlasts them (the slow test here). The
    stall comes late: the rest of the reply fits the board's queue, so the generation ends (EOS) during
    the stall and only the queued text is lost. STATS said 'eos' then, and the cut reply passed as whole."""
    with connect(board.port, 0) as link:
        whole = _reply(link)
        with pytest.raises(ReplyCutError) as e:
            _reply(link, stall_after=len(whole) - 200, stall_s=17.0)
        assert link.last_stats.stop == "aborted"
        msg = str(e.value)
        assert msg.startswith(f"{board.port}: the board stopped the reply after {link.last_stats.gen_tokens} of up "
                              "to 300 tokens") and "\n" not in msg
        # the session goes on: the next reply is whole
        assert len(_reply(link)) > 0 and link.last_stats.stop in ("eos", "max_tokens")


