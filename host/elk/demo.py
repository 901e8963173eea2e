"""`elk demo`: the whole path in one command. Build the firmware, pack a small model (default: the
demo model under models/demo/), start an emulated board behind a pty, flash it over the serial link
and chat with it. With stdin not a terminal it runs one scripted prompt and exits (for tests).
Not here: any step's logic; each is the library function the matching `elk` command calls.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from elk import boards, chat, emulate
from elk import flash as flashing
from elk.errors import ElkError
from elk.link import connect

DEMO_DIR = boards.ROOT / "models" / "demo"
SCRIPTED_PROMPT = "Once upon a time"


def _default_model() -> tuple:
    ckpt, tok = DEMO_DIR / "demo.bin", DEMO_DIR / "tokenizer.model"
    if not ckpt.is_file():
        raise ElkError(f"{ckpt} not found: pass --model CHECKPOINT (anything `elk pack` takes)")
    return str(ckpt), (str(tok) if tok.is_file() else None)


def pack_model(src, tokenizer, out_path) -> None:
    from elk.convert.pack import pack

    pack(src, str(out_path), tokenizer=tokenizer)


def demo(model=None, tokenizer=None, board="host", out=sys.stdout, inp=sys.stdin, max_tokens=120) -> int:
    def step(text):
        print(f"demo: {text}", file=out, flush=True)

    src, tok = (model, tokenizer) if model else _default_model()
    b = boards.load(board)
    step(f"building elk-fw for {b.name}")
    emulate.build(b)
    with tempfile.TemporaryDirectory(prefix="elk-demo-") as tmp:
        image = pathlib.Path(tmp) / "model.elk"
        step(f"packing {src} -> {image.name}")
        pack_model(src, tok, image)
        with emulate.Emulator(board, flash=pathlib.Path(tmp) / "flash.bin", log=open("/dev/null", "w")) as emu:
            step(f"emulated {b.name} board on {emu.port}")
            baud = emu.baud
            res = flashing.flash([emu.port], image, connect_baud=baud, progress=True, out=out)[0]
            if not res.ok:
                raise ElkError(f"demo: flashing failed: {res.error}")
            print(res.summary(), file=out, flush=True)
            seed, drawn = chat.choose_seed(None)  # as `elk chat` without --seed: drawn, shown in the greeting
            s = chat.Sampling(max_tokens=max_tokens, seed=seed, seed_drawn=drawn)
            if hasattr(inp, "isatty") and inp.isatty():
                return chat.interactive(emu.port, s, baud=baud, inp=inp, out=out)
            step(f"not a terminal: one scripted prompt ({SCRIPTED_PROMPT!r}, greedy)")
            s.temperature = 0.0
            with connect(emu.port, baud) as link:
                out.write(SCRIPTED_PROMPT)
                for piece in link.generate(SCRIPTED_PROMPT, max_tokens=max_tokens, temperature=0.0,
                                           raw=True, reset=True):
                    out.write(piece)
                    out.flush()
                out.write("\n")
                print(chat.stats_line(link.last_stats), file=out, flush=True)
    return 0
