"""`elk eval`: how far a quantized image is from its float32 reference on a teacher-forced text:
top-1 agreement of the next-token argmax, mean KL(P_f32 || P_quant) per position, and the
perplexity of both on the text. Logits come from the C runtime (elk.load) or the numpy reference.

Not here: speed (elk bench) or any sampling.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from elk import image as im
from elk import tokenizer as tk
from elk.errors import ElkError

# A short story written for this project (TinyStories-like vocabulary, so small models know the words).
BUILTIN_TEXT = (
    "Once upon a time, there was a little boy named Tom. Tom had a red kite. Every day he ran to the hill "
    "to fly it. One windy day, the kite went very high and got stuck in a tall tree. Tom was sad. He asked "
    "his friend Sue for help. Sue was good at climbing. She climbed the tree and got the kite. Tom said, "
    "\"Thank you, Sue! You are a good friend.\" They flew the kite together until the sun went down. "
    "Then they went home, happy and tired."
)


class EvalError(ElkError):
    pass


@dataclasses.dataclass
class EvalResult:
    image: str
    ref: str
    engine: str
    n_tokens: int  # positions scored (teacher-forced predictions)
    top1: float  # fraction of positions where both argmaxes agree
    mean_kl: float  # nats, mean over positions of KL(P_ref || P_image)
    max_kl: float
    ppl_image: float
    ppl_ref: float

    def lines(self) -> list:
        return [
            f"image {self.image} vs reference {self.ref} ({self.engine}, {self.n_tokens} positions)",
            f"top-1 agreement: {100 * self.top1:.2f}%",
            f"mean KL: {self.mean_kl:.6f} nats (max {self.max_kl:.6f})",
            f"perplexity: {self.ppl_image:.4f} (reference {self.ppl_ref:.4f})",
        ]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(lq: np.ndarray, lr: np.ndarray, ids) -> dict:
    """Metrics for logits of the scored image (lq) against the reference (lr), both (n, vocab) where
    row t predicts ids[t + 1]."""
    n = len(ids) - 1
    lq, lr = lq[:n], lr[:n]
    pq, pr = _log_softmax(lq), _log_softmax(lr)
    kl = np.sum(np.exp(pr) * (pr - pq), axis=-1)
    nxt = np.asarray(ids[1:])
    nll_q = -pq[np.arange(n), nxt]
    nll_r = -pr[np.arange(n), nxt]
    return dict(n_tokens=n, top1=float(np.mean(lq.argmax(1) == lr.argmax(1))), mean_kl=float(kl.mean()),
                max_kl=float(kl.max()), ppl_image=float(np.exp(nll_q.mean())), ppl_ref=float(np.exp(nll_r.mean())))


def _logits_fn(engine: str):
    if engine in ("auto", "runtime"):
        try:
            import elk

            def run(path, ids):
                with elk.load(path) as m:
                    return m.logits(ids)

            if engine == "runtime":
                return run, "runtime"
            from elk import runtime

            runtime.library()
            return run, "runtime"
        except (ImportError, ElkError):
            if engine == "runtime":
                raise
    from elk.reference import Reference

    return (lambda path, ids: Reference(path).logits(ids)), "reference"


def evaluate(image, ref, text="builtin", max_tokens: int = 256, engine: str = "auto") -> EvalResult:
    """Score `image` against the float32 `ref` image of the same model."""
    a, b = im.read_image(image), im.read_image(ref)
    if a.config.vocab_size != b.config.vocab_size or a.config.dim != b.config.dim:
        raise EvalError(f"{image} and {ref} are not the same model (vocab {a.config.vocab_size} vs "
                        f"{b.config.vocab_size}, dim {a.config.dim} vs {b.config.dim})")
    if text in (None, "", "builtin"):
        body = BUILTIN_TEXT
    else:
        try:
            body = pathlib.Path(text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise EvalError(f"{text}: cannot read text ({getattr(e, 'strerror', None) or e})") from None
    if max_tokens < 2:
        raise EvalError(f"--max-tokens {max_tokens}: at least 2 are needed (BOS and one token to score)")
    ids = tk.encode(a.vocab(), body, bos=True)
    limit = min(max_tokens, a.config.seq_len, b.config.seq_len)
    ids = ids[:limit]
    if len(ids) < 2:
        raise EvalError("the text is too short to score (needs at least one token after BOS)")
    fn, used = _logits_fn(engine)
    lq, lr = fn(a.path, ids), fn(b.path, ids)
    return EvalResult(str(image), str(ref), used, **compare_logits(lq, lr, ids))
