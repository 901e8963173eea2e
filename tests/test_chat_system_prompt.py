"""ChatML's default system prompt and the board's turn buffer. A checkpoint whose chat template writes a
system message when the conversation has none (SmolLM2-Instruct) gets that text in the image
(metadata chat.system) and the board's ChatML wrapper starts each conversation with it, so the first
turn's tokens are those of the template rendered by Jinja (the oracle here) and tokenized by the
`tokenizers` library. A wrapped turn longer than the board's buffer is refused with its sizes, never cut."""

import json
import os

import pytest

from conftest import fixture_path, run_elk
from elk import flash as flashing
from elk.convert import default_system_prompt
from elk.emulate import Emulator
from elk.link import BoardReplyError, connect

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2-135M-Instruct's tokenizer_config.json chat_template, as the checkpoint ships it
SMOL_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\n" + SMOL_SYSTEM + "<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PLAIN_TEMPLATE = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}"
                  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
PROMPT = "Tell me a story about 12 cats"


@pytest.mark.parametrize("template, want", [
    (SMOL_TEMPLATE, SMOL_SYSTEM),
    # a .jinja file spells the newline and a quote as escapes inside the literal (Qwen2.5 style)
    ("{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou\\'re Qwen.<|im_end|>\\n' }}"
     "{%- endif %}", "You're Qwen."),
    (PLAIN_TEMPLATE, None),  # no default: nothing is added
    ("{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}", None),  # the caller's text only
    ("Don't '<|im_start|>system\nnot code<|im_end|>' {{ 'x' }}", None),  # text outside tags is not a literal
    (None, None),
])
def test_default_system_prompt_is_the_templates_own_literal(template, want):
    assert default_system_prompt(template) == want


def _render(template, messages):
    """The conversation as transformers' apply_chat_template renders it (Jinja, generation prompt on)."""
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """A SmolLM2-Instruct-shaped folder (byte-level tokenizer trained by `tokenizers`, the checkpoint's
    chat template, weights that always pick <|im_end|>) packed with `elk pack`."""
    import shutil

    from test_tokenizer_bytelevel import _train
    from test_tokenizer_special import _model_files, _pack

    d = tmp_path_factory.mktemp("smolsys")
    hf = _train(d / "tokenizer.json")
    folder = d / "smol"
    _model_files(folder, vocab=hf.get_vocab_size(), target=hf.token_to_id("<|im_end|>"))
    shutil.copyfile(d / "tokenizer.json", folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": SMOL_TEMPLATE}))
    return hf, _pack(folder, d / "smol.elk")


def test_pack_records_the_checkpoints_default_system_prompt(smol):
    _, image = smol
    meta = json.loads(run_elk("info", image, "--json").stdout)["metadata"]
    assert meta["chat.template"] == "chatml" and meta["chat.system"] == SMOL_SYSTEM


def test_board_starts_a_conversation_with_the_default_system_prompt_like_the_template(smol, host_build):
    hf, image = smol
    user = {"role": "user", "content": PROMPT}
    first = _render(SMOL_TEMPLATE, [user])
    assert first.startswith("<|im_start|>system\n" + SMOL_SYSTEM)
    # the reply was empty (the model stops at once) and <|im_end|> is not kept: turn 2 closes it
    both = _render(SMOL_TEMPLATE, [user, {"role": "assistant", "content": ""}, user])
    ids = lambda text: hf.encode(text, add_special_tokens=False).ids  # noqa: E731
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            turns = []
            for kw in ({"reset": True}, {}, {"reset": True, "raw": True}):
                assert "".join(link.generate(PROMPT, max_tokens=4, temperature=0, **kw)) == ""
                turns.append(link.last_stats.prompt_tokens)
    assert turns[0] == len(ids(first))  # system block + user turn, exactly the template's
    assert turns[1] == len(ids(both)) - len(ids(first))  # no second system block
    assert turns[2] == len(ids(PROMPT))  # raw: the prompt alone


def _tok512_chatml_image(path, system):
    """stories260K + tok512 (its "<|im_start|>" is text, not a special token) with the chatml
    template and a system prompt in the metadata."""
    from elk.convert import load_model
    from elk.image import write_image

    model = load_model(str(fixture_path("stories260K.bin")), tokenizer=str(fixture_path("tok512.bin")))
    model.chat_template = "chatml"
    model.metadata = {"chat.system": system}
    write_image(str(path), model)
    return path


def test_a_wrapped_turn_longer_than_the_board_buffer_is_refused_not_cut(tmp_path, host_build):
    """Text-path ChatML (whole turn tokenized as one text) with a 300-byte system prompt, more than the
    128 bytes the board's buffer keeps beside a full prompt: a short turn holds all of it; a 32568-byte
    prompt whose wrapped first turn needs 32958 bytes is refused with the sizes; the same prompt raw or
    on a later turn (no system block) fits the buffer and reaches the tokenizer (then the context)."""
    import elk

    system = "You are a careful storyteller. " * 10  # 310 bytes: 340 with its markers
    image = _tok512_chatml_image(tmp_path / "sys.elk", system)
    rt = elk.load(str(image))
    wrapped = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    long_prompt = "a" * 32568
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            "".join(link.generate(PROMPT, max_tokens=2, temperature=0, reset=True))
            short = link.last_stats
            with pytest.raises(BoardReplyError) as refused:
                "".join(link.generate(long_prompt, max_tokens=2, temperature=0, reset=True))
            "".join(link.generate(long_prompt, max_tokens=2, temperature=0, reset=True, raw=True))
            raw = link.last_stats
            "".join(link.generate(PROMPT, max_tokens=2, temperature=0, reset=True))
            "".join(link.generate(long_prompt, max_tokens=2, temperature=0))
            later = link.last_stats
    assert short.prompt_tokens == len(rt.tokenize(wrapped, bos=True))  # the whole system prompt, not 128 bytes
    assert refused.value.status == -7 and "32568-byte prompt" in refused.value.detail
    assert "needs 32958 bytes" in refused.value.detail and "system prompt" in refused.value.detail
    assert (raw.stop, raw.prompt_tokens) == ("context_full", len(rt.tokenize(long_prompt, bos=True)))
    assert later.stop == "context_full" and later.prompt_tokens > raw.prompt_tokens  # wrapped, no system block


@pytest.mark.parametrize("prompt", ["\n\nTell me a story", "  two spaces first", "\t tab", "Tell me a story  "])
def test_board_tokenizes_the_user_line_with_its_prompt_as_the_template_does(smol, host_build, prompt):
    """The template's "user\n" and the prompt are one stretch of text between two special tokens: a
    prompt that starts with white space joins the newline's pre-token ("\n\n", "\n " in GPT-2's pattern),
    as the rendered template tokenized by `tokenizers` has it. (Tokenizing them apart split it.)"""
    hf, image = smol
    want = len(hf.encode(_render(SMOL_TEMPLATE, [{"role": "user", "content": prompt}]),
                         add_special_tokens=False).ids)
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            assert "".join(link.generate(prompt, max_tokens=4, temperature=0, reset=True)) == ""
            assert link.last_stats.prompt_tokens == want
