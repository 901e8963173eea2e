"""elk: edge-LLM deployment kit (host side).

    m = elk.load("model.elk")
    ids = m.tokenize("Once upon a time", bos=True)
    for piece in m.generate("Once upon a time", max_tokens=50, temperature=0):
        print(piece, end="")
"""

from elk.errors import ElkError, FormatError, RuntimeFailure

__version__ = "0.1.0"


def load(path, **options):
    """Open an image with the C runtime; see elk.runtime.Model for the options."""
    from elk.runtime import Model

    return Model(path, **options)


__all__ = ["load", "ElkError", "FormatError", "RuntimeFailure", "__version__"]
