"""The firmware wraps each user turn in the image's chat template (metadata chat.template) unless the
request is raw: the prompt token counts the board reports in STATS equal the counts of the wrapped
text tokenized by the host runtime."""

import os

import pytest

from conftest import fixture_path
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect

PROMPT = "Tell me a story"


def _image_with_template(path, template):
    from elk.convert import load_model
    from elk.image import write_image

    model = load_model(str(fixture_path("stories260K.bin")), tokenizer=str(fixture_path("tok512.bin")))
    model.chat_template = template
    write_image(str(path), model)
    return path


def _expected(rt, template, first):
    tok = rt.tokenize
    if template == "zephyr":  # <|user|>\n{p}</s>\n<|assistant|>\n with </s> as the EOS id
        return len(tok(f"<|user|>\n{PROMPT}", bos=first)) + 1 + len(tok("\n<|assistant|>\n", bos=False))
    if template == "llama2":  # <s>[INST] {p} [/INST] every turn
        return len(tok(f"[INST] {PROMPT} [/INST]", bos=True))
    return len(tok(f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n", bos=first))


@pytest.mark.parametrize("template", ["zephyr", "llama2", "chatml"])
def test_firmware_wraps_turns_in_the_chat_template(host_build, tmp_path, template):
    import elk

    image = _image_with_template(tmp_path / f"{template}.elk", template)
    rt = elk.load(str(image))
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            assert link.info().chat_template == template
            "".join(link.generate(PROMPT, max_tokens=4, temperature=0, reset=True))
            first = link.last_stats
            "".join(link.generate(PROMPT, max_tokens=4, temperature=0))
            second = link.last_stats
            "".join(link.generate(PROMPT, max_tokens=4, temperature=0, raw=True, reset=True))
            raw = link.last_stats
    assert first.prompt_tokens == _expected(rt, template, first=True)
    assert second.prompt_tokens == _expected(rt, template, first=False)
    assert raw.prompt_tokens == len(rt.tokenize(PROMPT, bos=True))
    assert first.prompt_tokens > raw.prompt_tokens
