"""Prompts longer than one frame (docs/protocol.md "Long prompts"): the host stages them in PROMPT frames
and GENERATE (flag STAGED) carries the rest; the board takes up to the 32 KiB its INFO announces, bounded
by the model's context. The model is stories260K with its context raised to 4096 tokens (the llama2.c
header's seq_len; RoPE is computed, so the weights serve any length), so a prompt of more than 8172 bytes
fits the context. The reply over the link must equal the host runtime's on the same image and prompt."""

import os
import struct

import pytest

import elk
from conftest import fixture_path, flashed_board, pack_stories260k_long, run_elk
from elk import flash as flashing
from elk import proto_spec as P
from elk.emulate import Emulator
from elk.link import CMD, PromptTooLongError, connect

# 9970 bytes, 3732 tokens of the 512-token vocabulary: over one frame (8172 bytes of prompt), within 4096
LONG = "".join(f"Lily and Tom went to the park {i} times to play with the ball. " for i in range(160))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return pack_stories260k_long(tmp_path_factory.mktemp("long"))


@pytest.fixture(scope="module")
def board(host_build, image):
    with flashed_board(image) as emu:
        yield emu


def _host_reply(image, prompt, n):
    with elk.load(str(image)) as m:
        assert len(m.tokenize(prompt)) + n <= 4096
        return "".join(m.generate(prompt, max_tokens=n, temperature=0))


def test_a_prompt_over_one_frame_gets_the_same_reply_as_the_host_runtime(board, image):
    assert len(LONG.encode()) > 8172
    r = run_elk("chat", "--port", board.port, "--baud", "0", "-p", LONG, "-n", "16", "--raw", "--stats")
    assert r.returncode == 0, r.stderr
    reply = r.stdout.removesuffix("\n")
    assert reply == _host_reply(image, LONG, 16) and reply
    assert "prompt 3732 tokens" in r.stderr and "context 3748/4096" in r.stderr


def test_a_prompt_staged_in_many_small_frames_arrives_whole(board, image):
    """With 600-byte frames (a board that negotiated little) a 3 KB prompt takes five PROMPT frames and a
    GENERATE; the board sees every byte in order: the same reply and token count as the host."""
    prompt = LONG[:3000]
    with connect(board.port, 0) as link:
        link.payload_max = 600
        frames = link.counters.frames_out
        reply = "".join(link.generate(prompt, max_tokens=12, temperature=0, raw=True, reset=True))
        sent = link.counters.frames_out - frames
        st = link.last_stats
    assert sent == 1 + 1 + 5  # INFO (the board's prompt limit), 5 PROMPT frames of 596 bytes, GENERATE
    assert reply == _host_reply(image, prompt, 12)
    with elk.load(str(image)) as m:
        assert st.prompt_tokens == len(m.tokenize(prompt))


def test_a_staged_prompt_beyond_the_context_is_one_error_line_from_the_board(board, image):
    prompt = LONG * 2  # 19940 bytes: three frames, more tokens than the 4096-token context
    with elk.load(str(image)) as m:
        need = len(m.tokenize(prompt))
    r = run_elk("chat", "--port", board.port, "--baud", "0", "-p", prompt, "--raw")
    assert r.returncode == 2 and r.stdout == "\n"
    assert r.stderr == (f"elk: error: {board.port}: the prompt is {need} tokens, more than the model's context "
                        "of 4096; send a shorter prompt\n")
    with connect(board.port, 0) as link:  # the refused turn left nothing behind; the board serves on
        assert link.info().ctx_used == 0
        assert "".join(link.generate("Once upon a time", max_tokens=8, temperature=0, raw=True, reset=True))


def test_the_board_checks_prompt_staging_itself(board):
    """A host that skips the rules gets a status and a reason for each: staging past 32 KiB (E_RANGE), an
    offset that does not continue the staged bytes (E_STATE), GENERATE STAGED with nothing staged
    (E_STATE), and a new session's HELLO drops what the previous one staged."""
    flags = P.GEN_FLAGS["STAGED"] | P.GEN_FLAGS["RAW"] | P.GEN_FLAGS["RESET_CONTEXT"]
    head = struct.pack("<IIffIfIQ", flags, 4, 0.0, 1.0, 0, 1.0, 64, 0)

    def req(link, code, payload):
        r = link.request(code, payload, check=False)
        status = struct.unpack_from("<h", r)[0]
        if status:
            return status, r[2:].split(b"\0", 1)[0].decode()
        return status, struct.unpack_from("<I", r, 2)[0] if code == CMD["PROMPT"] else None

    with connect(board.port, 0) as link:
        assert link.info().prompt_max == P.PROMPT_MAX_BOARD == 32768
        chunk = b"a" * 8000
        for off in range(0, 32000, 8000):
            assert req(link, CMD["PROMPT"], struct.pack("<I", off) + chunk) == (0, off + 8000)  # bytes staged
        assert req(link, CMD["PROMPT"], struct.pack("<I", 32000) + chunk) == (
            -9, "the prompt is longer than the 32768 bytes this board takes")
        assert req(link, CMD["PROMPT"], struct.pack("<I", 0) + b"Once upon") == (0, 9)  # offset 0 starts over
        assert req(link, CMD["PROMPT"], struct.pack("<I", 4) + b"x") == (
            -15, "prompt bytes at offset 4, but 9 are staged")
        assert req(link, CMD["GENERATE"], head + b" a time") == (
            -15, "flag STAGED, but no prompt bytes were staged with PROMPT")
        assert req(link, CMD["PROMPT"], struct.pack("<I", 0) + b"Once upon")[0] == 0
    with connect(board.port, 0) as link:  # a new session: HELLO dropped the staged bytes
        assert req(link, CMD["GENERATE"], head + b" a time")[0] == -15
        assert req(link, CMD["PROMPT"], struct.pack("<I", 0) + b"Once upon")[0] == 0
        assert req(link, CMD["GENERATE"], head + b" a time")[0] == 0  # staged + own bytes = one prompt
        text = "".join(piece.payload.decode() for piece in _events(link))
    assert text.startswith(", there was")


def _events(link):
    """PIECE events of the reply just started, until STATS."""
    import time

    end = time.monotonic() + 30
    while time.monotonic() < end:
        link.pump(0.05)
        while link.events:
            ev = link.events.popleft()
            if ev.code == P.EVENTS["STATS"]:
                return
            yield ev
    raise AssertionError("no STATS")


def test_firmware_without_long_prompts_gets_the_one_frame_limit(board):
    """A board that does not announce LONG_PROMPT (older firmware) is sent nothing over one frame."""
    with connect(board.port, 0) as link:
        link.hello_reply["capabilities"] &= ~P.CAPABILITIES["LONG_PROMPT"]
        with pytest.raises(PromptTooLongError, match=r"the prompt is 9970 bytes; this board's firmware takes one "
                                                     r"frame of at most 8208 bytes, so at most 8172 bytes"):
            list(link.generate(LONG, max_tokens=4))
        # nothing was sent: the session goes on with the next prompt
        assert "".join(link.generate("Once upon a time", max_tokens=4, temperature=0, raw=True, reset=True))


def test_a_long_prompt_is_wrapped_whole_in_the_chat_template(host_build, image, tmp_path):
    """The board wraps the whole staged prompt (not its first 8 KiB) in the image's ChatML template: the
    prompt tokens STATS reports equal the host runtime's count of the wrapped text."""
    from elk.convert import load_model
    from elk.image import write_image

    model = load_model(str(image.parent / "s4k.bin"), tokenizer=str(fixture_path("tok512.bin")))
    model.chat_template = "chatml"
    templated = tmp_path / "chatml.elk"
    write_image(str(templated), model)
    with elk.load(str(templated)) as m:
        want = len(m.tokenize(f"<|im_start|>user\n{LONG}<|im_end|>\n<|im_start|>assistant\n", bos=True))
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], templated, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            "".join(link.generate(LONG, max_tokens=2, temperature=0, reset=True))
            st = link.last_stats
    assert st.status == 0 and st.prompt_tokens == want > 3732
