"""`elk chat`: talk to a board's model over the serial link. Interactive console (replies stream as
they are generated; Ctrl-C stops the reply, not the session; /reset /temp /stats /info /quit) or a
one-shot prompt for scripts. Sampling (temperature, top-p, top-k, seed, token limit) travels with every
request and can change between turns (/temp, /top-p, /top-k, /seed, /tokens, /sampling); without --seed a
session draws one at random and says it (choose_seed, seed_note), as `elk run` does. Prompts longer
than one frame are staged across frames by elk.link; on a terminal a long prompt's prefill shows its progress
(boards with capability PROGRESS). Not here: the protocol (elk.link).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from elk.errors import ElkError
from elk.link import REPLY_SILENCE_S, Link, PromptTooLongError, connect

HELP = """commands:
  /reset        start a new conversation
  /temp X       sampling temperature (0 = greedy)
  /top-p P      nucleus sampling, 0 < P <= 1 (1 = off)
  /top-k K      sample among the K likeliest tokens (0 = off)
  /seed N       random seed (the same seed and prompt give the same reply)
  /tokens N     most tokens per reply
  /sampling     show the settings above
  /stats        speed and context of the last reply
  /info         the board, its slots and the model
  /quit         leave (Ctrl-D too)
Ctrl-C stops the reply being generated."""


@dataclasses.dataclass
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.9
    top_k: int = 0
    repeat_penalty: float = 1.0
    seed: int = 0
    raw: bool = False
    seed_drawn: bool = False  # the seed was drawn at random (no --seed): say it, so the run can be repeated


def choose_seed(seed: int | None) -> tuple:
    """(seed, drawn): `seed` when given, else one drawn at random, as `elk run` does without --seed."""
    if seed is not None:
        return seed, False
    return int.from_bytes(os.urandom(8), "little"), True


def seed_note(seed: int, what: str) -> str:
    """The stderr line that makes a run with a drawn seed repeatable (`elk run`, `elk chat -p`)."""
    return f"elk: seed {seed} (drawn at random; --seed {seed} repeats {what})"


class PrefillNote:
    """`(prefill 1216/3732 tokens)` on a terminal while a long prompt is prefilled (boards with capability
    PROGRESS report it), rewritten in place and erased before the reply's first text. Nothing on a pipe."""

    def __init__(self, stream):
        self.stream = stream
        self.on = hasattr(stream, "isatty") and stream.isatty()
        self.width = 0

    def __call__(self, done: int, total: int) -> None:
        if self.on:
            text = f"(prefill {done}/{total} tokens)"
            self.stream.write("\r" + text.ljust(self.width))
            self.stream.flush()
            self.width = len(text)

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _require_model(link: Link) -> None:
    info = link.info()
    if info.running > 1:
        why = f" ({info.boot_error})" if info.boot_error else ""
        raise ElkError(f"{link.port}: the board runs no model{why}; flash one with `elk flash`")


def one_shot(port: str, prompt: str, s: Sampling, *, baud: int = 115200, out=sys.stdout, stats=False,
             connect_timeout: float | None = None, reply_timeout: float = REPLY_SILENCE_S) -> int:
    """Print the reply to one prompt as it streams (a fresh conversation); return 0. `reply_timeout`:
    seconds the board may stay silent during the reply (elk.link.Link.generate's idle_timeout)."""
    with connect(port, baud, connect_timeout) as link:
        _require_model(link)
        wrote = False
        note = PrefillNote(sys.stderr if stats else None)
        try:
            for piece in link.generate(prompt, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                                       top_k=s.top_k, repeat_penalty=s.repeat_penalty, seed=s.seed, raw=s.raw,
                                       reset=True, on_progress=note, idle_timeout=reply_timeout):
                note.clear()
                out.write(piece)
                out.flush()
                wrote = True
        except BaseException:
            note.clear()
            if wrote:
                out.write("\n")  # the error line (stderr) starts on a line of its own
                out.flush()
            raise
        out.write("\n")
        out.flush()
        if s.seed_drawn and s.temperature > 0:  # after the reply (a refused prompt stays one line); greedy
            print(seed_note(s.seed, "this reply"), file=sys.stderr, flush=True)  # replies do not depend on it
        st = link.last_stats
        if stats and st:
            print(stats_line(st), file=sys.stderr)
        problem = context_problem(st)
        if problem and st.status != 0:
            raise ElkError(f"{port}: {problem}")
        if problem:
            print(f"({problem})", file=sys.stderr)
        if st and st.stop == "error":
            raise ElkError(f"{port}: generation failed on the board (status {link.last_stats.status})")
    return 0


def stats_line(st) -> str:
    npu = (f", NPU prefill {st.npu_s * 1000:.3f} ms simulated ({st.npu_chunks} chunks)"
           if st.npu_chunks else "")
    return (f"{st.gen_tokens} tokens, {st.tokens_per_s:.1f} tokens/s, time to first token "
            f"{st.ttft_s * 1000:.1f} ms, prompt {st.prompt_tokens} tokens, context {st.ctx_used}/{st.n_ctx}, "
            f"stopped: {st.stop}{npu}")


def context_problem(st) -> str | None:
    """One line when a turn ran into the end of the context, else None. The board keeps no sliding
    window (docs/protocol.md): a full context needs /reset (a new conversation)."""
    if st is None or st.stop != "context_full":
        return None
    if st.status == 0:
        return f"context full ({st.ctx_used}/{st.n_ctx} tokens): /reset starts a new conversation"
    if st.ctx_used == 0 and st.prompt_tokens == st.n_ctx:  # fits exactly: no room for the reply
        return (f"the prompt is {st.prompt_tokens} tokens and fills the model's context of {st.n_ctx}, leaving "
                "no room for a reply; send a shorter prompt")
    if st.ctx_used == 0 or st.prompt_tokens > st.n_ctx:
        return (f"the prompt is {st.prompt_tokens} tokens, more than the model's context of {st.n_ctx}; "
                "send a shorter prompt")
    return (f"the prompt ({st.prompt_tokens} tokens) does not fit the {st.n_ctx - st.ctx_used} tokens left "
            f"in the context ({st.ctx_used}/{st.n_ctx} used): /reset starts a new conversation")


def info_lines(info) -> list:
    lines = [f"board {info.board}: {info.firmware}, protocol v{info.protocol}, "
             f"RAM {info.ram_bytes >> 20} MiB, flash {info.flash_bytes >> 20} MiB "
             f"(slots of {info.slot_size >> 20} MiB, blocks of {info.block_size >> 10} KiB)",
             f"line: {'unthrottled' if info.baud == 0 else str(info.baud) + ' baud'} (max {info.max_baud}), "
             f"frames up to {info.max_payload} bytes, capabilities: {', '.join(info.caps())}"]
    for s in info.slots:
        tags = [t for t, on in (("active", s.active), ("running", s.running)) if on]
        what = f"{s.name} ({s.image_size} bytes, sha256 {s.sha256})" if s.valid else "(empty)"
        lines.append(f"slot {s.letter}: {what}{' [' + ', '.join(tags) + ']' if tags else ''}")
    if info.running < 2:
        lines.append(f"model: context {info.ctx_used}/{info.n_ctx}, kernels {info.kernels}, "
                     f"chat template {info.chat_template or 'none'}")
        if info.npu:
            lines.append(f"npu: prompt prefill on the {info.npu} backend, decode on the CPU")
        elif info.npu_note:
            lines.append(f"npu: not used, {info.npu_note}; prefill on the CPU")
    elif info.boot_error:
        lines.append(f"no model running: {info.boot_error}")
    return lines


def _finite(text: str) -> float:
    v = float(text)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError
    return v


# /command: (Sampling field, parser, lowest, highest, usage)
SETTINGS = {
    "/temp": ("temperature", _finite, 0.0, 100.0, "X with 0 <= X <= 100 (0 = greedy)"),
    "/top-p": ("top_p", _finite, 1e-9, 1.0, "P with 0 < P <= 1 (1 = off)"),
    "/top-k": ("top_k", int, 0, 2**31 - 1, "K, a whole number >= 0 (0 = off)"),
    "/seed": ("seed", int, 0, 2**64 - 1, "N, a whole number 0 to 2^64-1"),
    "/tokens": ("max_tokens", int, 1, 2**32 - 1, "N, a whole number >= 1"),
}


# Linux's terminal line discipline keeps at most 4095 bytes of a line being typed (N_TTY's 4096-byte
# buffer, the newline included) and drops the rest: a line read from a terminal that reaches it was cut.
TTY_LINE_MAX = 4095


class Console:
    """The interactive loop, separated from the terminal so tests can drive it with pipes."""

    def __init__(self, link: Link, s: Sampling, inp=sys.stdin, out=sys.stdout, reply_timeout: float = REPLY_SILENCE_S):
        self.link, self.s, self.inp, self.out = link, s, inp, out
        self.reply_timeout = reply_timeout  # seconds the board may stay silent during a reply
        self.reset_next = True
        self.last_stats = None

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def command(self, line: str) -> bool:
        """Handle a /command; False when the session ends."""
        word, _, arg = line.partition(" ")
        if word in ("/quit", "/exit", "/q"):
            return False
        if word == "/reset":
            self.reset_next = True
            self.say("(new conversation)")
        elif word in SETTINGS:
            self.setting(word, arg.strip())
        elif word == "/sampling":
            self.say(self.sampling_line())
        elif word == "/stats":
            self.say(stats_line(self.last_stats) if self.last_stats else "(no reply yet)")
        elif word == "/info":
            self.say("\n".join(info_lines(self.link.info())))
        elif word in ("/help", "/?"):
            self.say(HELP)
        else:
            self.say(f"unknown command {word} (a line starting with / is a command)\n{HELP}")
        return True

    def sampling_line(self) -> str:
        s = self.s
        return (f"(temperature {s.temperature:g}, top-p {s.top_p:g}, top-k {s.top_k}, seed {s.seed}, "
                f"at most {s.max_tokens} tokens)")

    def setting(self, word: str, arg: str) -> None:
        """/temp, /top-p, /top-k, /seed, /tokens: checked here with the ranges the board checks again."""
        field, kind, low, high, usage = SETTINGS[word]
        try:
            value = kind(arg)
            if not low <= value <= high:
                raise ValueError
        except ValueError:
            self.say(f"usage: {word} {usage}")
            return
        setattr(self.s, field, value)
        if field == "seed":
            self.s.seed_drawn = False
        self.say(self.sampling_line())

    def reply(self, prompt: str) -> None:
        s = self.s
        note = PrefillNote(self.out)
        try:
            for piece in self.link.generate(prompt, max_tokens=s.max_tokens, temperature=s.temperature,
                                            top_p=s.top_p, top_k=s.top_k, repeat_penalty=s.repeat_penalty,
                                            seed=s.seed, raw=s.raw, reset=self.reset_next, on_progress=note,
                                            idle_timeout=self.reply_timeout):
                note.clear()
                self.out.write(piece)
                self.out.flush()
            self.reset_next = False
        except PromptTooLongError as e:  # refused before sending: the session and conversation go on
            self.say(f"(the line is {e.size} bytes; the board takes at most {e.limit} bytes of prompt per turn: "
                     "not sent)")
            return
        except KeyboardInterrupt:  # also during a long prompt's prefill: the board stops between batches
            note.clear()
            self.link.abort()
            self.link.drain_generation()
            self.out.write(" ^C")
            self.reset_next = False
        except ElkError:
            note.clear()
            self.out.write("\n")  # the link failed mid-reply: the error line starts on its own line
            self.out.flush()
            raise
        self.last_stats = self.link.last_stats
        self.out.write("\n")
        problem = context_problem(self.last_stats)
        if problem:
            self.out.write(f"({problem})\n")
        self.out.flush()

    def run(self) -> int:
        interactive = hasattr(self.inp, "isatty") and self.inp.isatty()
        while True:
            try:
                if interactive:
                    line = input("> ")
                else:
                    self.out.write("> ")
                    self.out.flush()
                    line = self.inp.readline()
                    if not line:
                        self.out.write("\n")
                        return 0
                    line = line.rstrip("\n")
            except EOFError:
                self.out.write("\n")
                return 0
            except KeyboardInterrupt:
                self.out.write("\n(Ctrl-C stops a reply; /quit or Ctrl-D leaves)\n")
                continue
            if interactive and len(line.encode("utf-8", "surrogateescape")) >= TTY_LINE_MAX:
                self.say(f"(the terminal passes at most {TTY_LINE_MAX} bytes of a typed line and this one reached "
                         "it, so its end was cut: not sent; pipe long prompts in: elk chat ... < file)")
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return 0
                continue
            self.reply(line)


def interactive(port: str, s: Sampling, *, baud: int = 115200, inp=sys.stdin, out=sys.stdout,
                connect_timeout: float | None = None, reply_timeout: float = REPLY_SILENCE_S) -> int:
    with connect(port, baud, connect_timeout) as link:
        _require_model(link)  # one line with the board's reason (e.g. secure boot refused the slot)
        info = link.info()
        model = info.slots[info.running].name
        # a drawn seed serves the whole session (every turn, as --seed N does): shown so it can be repeated
        seed = f" (seed {s.seed}, drawn at random: --seed {s.seed} repeats this session)" if s.seed_drawn else ""
        print(f"connected to {info.board} ({info.firmware}) running {model}{seed}; /help for commands", file=out)
        return Console(link, s, inp, out, reply_timeout=reply_timeout).run()


def status(port: str, *, baud: int = 115200, as_json: bool = False, out=sys.stdout,
           connect_timeout: float | None = None) -> int:
    with connect(port, baud, connect_timeout) as link:
        info = link.info()
    if as_json:
        print(json.dumps(info.to_dict(), indent=2), file=out)
    else:
        print("\n".join(info_lines(info)), file=out)
    return 0
