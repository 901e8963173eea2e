"""The edges of the context, the same in the Python API, `elk run` and elk-run: a prompt that fills the
context (or more) is one error line saying it uses N of the C context tokens and how to fix it; a
generation that runs into the end of the context stops there with a notice, never silently."""

import subprocess

import pytest

from conftest import pack_stories260k, run_elk

from elk.errors import ElkError, RuntimeFailure
from elk.runtime import Model
from elk import spec

PROMPT = "Once upon a time there was"  # 7 tokens with BOS in tok512: 1 403 407 261 378 383 286
N_PROMPT = 7


@pytest.fixture(scope="module")
def image(tmp_path_factory, host_build):
    return pack_stories260k(tmp_path_factory.mktemp("ctx") / "s.elk", quant="q8_0")


def elk_run(host_build, *args):
    return subprocess.run([str(host_build / "elk-run"), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def one_error_line(stderr: str, prefix: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# A prompt that exactly fills the context


def test_api_prompt_that_fills_the_context_is_an_error_naming_both_sizes(image):
    with Model(image, n_ctx=N_PROMPT, threads=1) as m:
        assert len(m.tokenize(PROMPT)) == N_PROMPT
        with pytest.raises(RuntimeFailure) as e:
            m.generate_tokens(PROMPT, max_tokens=5, temperature=0)
        msg = str(e.value)
        assert e.value.code == spec.ERRORS["E_RANGE"][0]
        assert f"prompt is {N_PROMPT} tokens" in msg and f"context of {N_PROMPT}" in msg, msg
        assert "no room to generate" in msg and "--ctx" in msg and "seq_len 512" in msg, msg
        assert "dimension too large" not in msg, msg
        # prefill only (max_tokens=0) still fits: nothing is asked of the full context
        assert list(m.generate_tokens(PROMPT, max_tokens=0)) == []
        assert m.stats.n_prompt == N_PROMPT


def test_elk_run_program_prompt_that_fills_the_context_is_one_error_line(host_build, image):
    p = elk_run(host_build, image, "-p", PROMPT, "--ctx", N_PROMPT, "-n", 5, "--temperature", 0)
    assert p.returncode == 2 and p.stdout == ""
    line = one_error_line(p.stderr, "elk-run: error: ")
    assert f"prompt is {N_PROMPT} tokens and fills the context of {N_PROMPT}" in line, line
    assert "--ctx" in line


def test_elk_run_command_prompt_that_fills_the_context_is_one_error_line(image):
    p = run_elk("run", image, "-p", PROMPT, "--ctx", N_PROMPT, "-n", 5, "--temperature", 0)
    assert p.returncode == 2 and p.stdout == ""
    line = one_error_line(p.stderr, "elk: error: ")
    assert f"prompt is {N_PROMPT} tokens and fills the context of {N_PROMPT}" in line, line
    assert "dimension too large" not in line and line.endswith("(ELK_E_RANGE)"), line


# ---------------------------------------------------------------------------------------------------
# A prompt longer than the context


def test_prompt_longer_than_the_context_is_one_error_line_everywhere(host_build, image):
    want = f"prompt is {N_PROMPT} tokens but the context holds {N_PROMPT - 1}"
    p = elk_run(host_build, image, "-p", PROMPT, "--ctx", N_PROMPT - 1, "-n", 5)
    assert p.returncode == 2 and p.stdout == "" and want in one_error_line(p.stderr, "elk-run: error: ")
    q = run_elk("run", image, "-p", PROMPT, "--ctx", N_PROMPT - 1, "-n", 5)
    assert q.returncode == 2 and q.stdout == ""
    line = one_error_line(q.stderr, "elk: error: ")
    assert want in line and "raise --ctx" in line and "context full, dimension" not in line, line
    with Model(image, n_ctx=N_PROMPT - 1, threads=1) as m, pytest.raises(ElkError, match=want):
        m.generate_tokens(PROMPT, max_tokens=5)


def test_prompt_longer_than_the_full_model_context_says_to_shorten_it(host_build, image):
    p = elk_run(host_build, image, "-p", "Once upon a time " * 200, "-n", 5)
    line = one_error_line(p.stderr, "elk-run: error: ")
    assert p.returncode == 2 and "context holds 512" in line and "shorten the prompt" in line, line
    assert "raise --ctx" not in line  # already the model's whole seq_len: nothing to raise


# ---------------------------------------------------------------------------------------------------
# Generation that runs into the end of the context


def test_api_generation_fills_the_context_then_stops_with_context_full(image):
    with Model(image, n_ctx=N_PROMPT + 3, threads=1) as m:
        out = list(m.generate_tokens(PROMPT, max_tokens=50, temperature=0))
        assert len(out) == 3 and m.stats.stop_reason == "context_full"
        # asking for exactly what fits is a normal max_tokens stop, not a context one
        out = list(m.generate_tokens(PROMPT, max_tokens=3, temperature=0))
        assert len(out) == 3 and m.stats.stop_reason == "max_tokens"


def test_elk_run_program_says_when_generation_stops_at_the_context_end(host_build, image):
    p = elk_run(host_build, image, "-p", PROMPT, "--ctx", N_PROMPT + 3, "-n", 50, "--temperature", 0)
    assert p.returncode == 0, p.stderr
    notice = [line for line in p.stderr.splitlines() if "context is full" in line]
    assert len(notice) == 1, p.stderr
    assert f"{N_PROMPT + 3} tokens" in notice[0] and "3 of the 50 tokens asked for" in notice[0], notice
    # no notice when -n fits
    q = elk_run(host_build, image, "-p", PROMPT, "--ctx", N_PROMPT + 3, "-n", 3, "--temperature", 0)
    assert q.returncode == 0 and "context is full" not in q.stderr
    assert q.stdout == p.stdout  # the same 3 tokens either way


def test_elk_run_command_says_when_generation_stops_at_the_context_end(image):
    p = run_elk("run", image, "-p", PROMPT, "--ctx", N_PROMPT + 3, "-n", 50, "--temperature", 0)
    assert p.returncode == 0, p.stderr
    notice = [line for line in p.stderr.splitlines() if "context is full" in line]
    assert len(notice) == 1 and "3 of the 50 tokens asked for" in notice[0], p.stderr
    q = run_elk("run", image, "-p", PROMPT, "--ctx", N_PROMPT + 3, "-n", 3, "--temperature", 0)
    assert q.returncode == 0 and "context is full" not in q.stderr and q.stdout == p.stdout


def test_keep_context_turn_that_would_fill_the_context_names_the_tokens_already_used(image):
    with Model(image, n_ctx=12, threads=1) as m:
        list(m.generate_tokens(PROMPT, max_tokens=2, temperature=0))  # 9 of 12 used
        more = m.tokenize(" Lily", bos=False)
        with pytest.raises(RuntimeFailure, match=r"9 already used"):
            m.generate_tokens(more * 3, max_tokens=1, keep_context=True)
