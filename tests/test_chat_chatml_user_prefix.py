"""The board's ChatML turn for a SentencePiece-style tokenizer.json: "user" follows <|im_start|>, so it
gets the dummy prefix exactly when the tokenizer puts one after a special token — "▁user" with the
legacy Llama normalizer (Prepend), "user" with Metaspace prepend_scheme "first" — as the rendered
template encoded by `tokenizers` (the oracle) has it. Checked end to end: the board's greedy reply on a
random model equals the host runtime's greedy continuation of the oracle's ids."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_elk
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect
from test_tokenizer_conformance import _spm_json

TEMPLATE = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
PROMPT = "Tell me a story about a cat"


@pytest.fixture(scope="module", params=["legacy", "first"])
def chatml(request, tmp_path_factory, host_build):
    from tokenizers import Tokenizer

    d = tmp_path_factory.mktemp("chatml-" + request.param)
    (d / "tokenizer.json").write_text(_spm_json(request.param), encoding="utf-8")
    folder = d / "m"  # a random tiny model (std 0.5: replies depend on every prompt id)
    p = subprocess.run([sys.executable, "-m", "elk.models.synth", "tiny", "--vocab", str(d / "tokenizer.json"),
                        "-o", str(folder), "--std", "0.5", "--seed", "3"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": TEMPLATE}))
    image = d / "m.elk"
    proc = run_elk("pack", folder, "-o", image, "--quant", "f32")
    assert proc.returncode == 0, proc.stderr
    return request.param, Tokenizer.from_file(str(d / "tokenizer.json")), image


def test_board_chatml_turn_is_the_templates_tokens(chatml):
    import elk

    kind, hf, image = chatml
    rendered = "<|im_start|>user\n" + PROMPT + "<|im_end|>\n<|im_start|>assistant\n"
    want = [hf.token_to_id("<s>")] + hf.encode(rendered, add_special_tokens=False).ids
    user = want[2]  # BOS, <|im_start|>, then the user line's first piece
    assert hf.id_to_token(user) == ("▁user" if kind == "legacy" else "user")
    wrong = want[:2] + [hf.token_to_id("user" if kind == "legacy" else "▁user")] + want[3:]
    with elk.load(image) as m:  # a reply reads as tokenizers decodes its ids alone (no leading space)
        host = hf.decode([t for t, _ in m.generate_tokens(want, max_tokens=12, temperature=0)])
        other = hf.decode([t for t, _ in m.generate_tokens(wrong, max_tokens=12, temperature=0)])
    assert host != other  # the model's reply tells the two prefixes apart, so the check below can fail
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            board = "".join(link.generate(PROMPT, max_tokens=12, temperature=0, reset=True))
            assert link.last_stats.prompt_tokens == len(want)
    assert board == host
