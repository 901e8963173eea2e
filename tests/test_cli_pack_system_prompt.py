"""`elk pack --system-prompt TEXT` / `--no-system-prompt`: the text that opens each ChatML conversation on
the board (METADATA chat.system) replaced or dropped at pack time, shown by `elk info`, and what the
board's tokenizer gets on a first turn: checked through `elk chat` against the same turn written out by
hand and sent with --raw (the wrapped text goes to the tokenizer as it is). The model is stories260K +
tok512 with the chatml template, whose markers are plain text there (the board wraps the whole turn as
one text), packed first with a default system prompt as a ChatML checkpoint's template would give."""

import json
import re

import pytest

from conftest import fixture_path, flashed_board, run_elk

DEFAULT = "You are a storyteller."
OURS = "Tell short tales about a cat named Tom."
PROMPT = "Once upon a time"


def _wrapped(system):
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return f"{head}<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def images(tmp_path_factory, host_build):
    from elk.convert import load_model
    from elk.image import write_image

    d = tmp_path_factory.mktemp("sysprompt")
    model = load_model(str(fixture_path("stories260K.bin")), tokenizer=str(fixture_path("tok512.bin")))
    model.chat_template = "chatml"
    model.metadata = {"chat.system": DEFAULT}
    write_image(str(d / "base.elk"), model)
    out = {}
    for key, opts in (("ours", ["--system-prompt", OURS]), ("none", ["--no-system-prompt"]), ("kept", [])):
        r = run_elk("pack", d / "base.elk", "-o", d / f"{key}.elk", "--quiet", *opts)
        assert r.returncode == 0, r.stderr
        out[key] = d / f"{key}.elk"
    out["base"] = d / "base.elk"
    return out


def _meta(image):
    r = run_elk("info", image, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["metadata"]


def test_pack_records_the_given_system_prompt_or_none(images):
    assert _meta(images["ours"])["chat.system"] == OURS
    assert "chat.system" not in _meta(images["none"])
    assert _meta(images["kept"])["chat.system"] == DEFAULT  # re-packing an image keeps its own
    for key in ("ours", "none", "kept"):
        assert _meta(images[key])["chat.template"] == "chatml"
    text = run_elk("info", images["ours"]).stdout.splitlines()
    assert f"meta chat.system = {OURS}" in text


def test_a_system_prompt_with_a_newline_stays_one_info_line(images, tmp_path):
    r = run_elk("pack", images["base"], "-o", tmp_path / "nl.elk", "--quiet", "--system-prompt", "Be kind.\nBe brief.")
    assert r.returncode == 0, r.stderr
    assert _meta(tmp_path / "nl.elk")["chat.system"] == "Be kind.\nBe brief."
    lines = run_elk("info", tmp_path / "nl.elk").stdout.splitlines()
    assert "meta chat.system = Be kind.\\nBe brief." in lines


def _chat(port, *args):
    r = run_elk("chat", "--port", port, "--baud", "0", "-n", "12", "--temperature", "0", "--stats", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout, int(re.search(r"prompt (\d+) tokens", r.stderr).group(1))


@pytest.mark.parametrize("key, system", [("ours", OURS), ("none", None), ("kept", DEFAULT)])
def test_elk_chat_opens_the_conversation_with_the_recorded_system_prompt(images, key, system):
    import elk

    want = _wrapped(system)
    with elk.load(str(images[key])) as m:
        n_want = len(m.tokenize(want, bos=True))
    with flashed_board(images[key]) as emu:
        text, n = _chat(emu.port, "-p", PROMPT)
        raw_text, n_raw = _chat(emu.port, "-p", want, "--raw")
    assert n == n_raw == n_want
    assert text == raw_text and text.strip()


@pytest.mark.parametrize("args, message", [
    (["--system-prompt", "x", "--no-system-prompt"],
     "elk pack: error: argument --no-system-prompt: not allowed with argument --system-prompt"),
    (["--system-prompt", ""], "elk: error: --system-prompt is empty; --no-system-prompt records none"),
    (["--system-prompt", "x" * 32769], "elk: error: --system-prompt is 32769 bytes; at most 32768"),
])
def test_pack_refuses_a_bad_system_prompt_in_one_line(images, tmp_path, args, message):
    r = run_elk("pack", images["base"], "-o", tmp_path / "x.elk", *args)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), r.stderr
    assert not (tmp_path / "x.elk").exists()


def test_pack_refuses_a_system_prompt_for_a_model_without_chatml(tmp_path, host_build):
    r = run_elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"),
                "-o", tmp_path / "x.elk", "--system-prompt", OURS)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("elk: error: --system-prompt: ") and "no chat template" in lines[0], r.stderr
    assert "ChatML" in lines[0] and not (tmp_path / "x.elk").exists()
    # dropping what is not there is no error
    r = run_elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"),
                "-o", tmp_path / "y.elk", "--quiet", "--no-system-prompt")
    assert r.returncode == 0 and "chat.system" not in _meta(tmp_path / "y.elk"), r.stderr


def test_an_npu_pack_takes_the_system_prompt_too(images, tmp_path):
    r = run_elk("pack", images["base"], "-o", tmp_path / "npu.elk", "--quiet", "--npu", "--system-prompt", OURS)
    assert r.returncode == 0, r.stderr
    info = json.loads(run_elk("info", tmp_path / "npu.elk", "--json").stdout)
    assert info["metadata"]["chat.system"] == OURS and "NPU" in info["sections"]
