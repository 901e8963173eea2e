"""The one family of errors elk raises. The CLI turns any ElkError into one line and exit code 2."""

from elk import spec


class ElkError(Exception):
    """A user-facing failure: bad input, a missing file, a board that does not answer."""


class FormatError(ElkError):
    """An input file (image, checkpoint, tokenizer, board file) is malformed."""


class RuntimeFailure(ElkError):
    """The C runtime returned an error code."""

    def __init__(self, code: int, detail: str = ""):
        self.code = code
        name, message = code_name(code)
        # The detail says what failed (C names the value and its limit); the code's generic text
        # (e.g. "value out of range") would only repeat it less precisely, so it stands alone.
        super().__init__(f"{detail} ({name})" if detail else f"{message} ({name})")


def code_name(code: int) -> tuple[str, str]:
    for name, (value, message) in spec.ERRORS.items():
        if value == code:
            return f"ELK_{name}", message
    return f"ELK_E{code}", "unknown error"
