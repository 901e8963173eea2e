"""Declarations read from a C header for cffi's ABI mode, so a binding's cdef is the header itself and
not a hand copy that drifts. Not a C parser: it drops comments, preprocessor lines and `extern "C"`
braces and hands the remaining top-level statements to cffi."""

from __future__ import annotations

import pathlib
import re

from elk.errors import ElkError

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_IDENT = re.compile(r"[A-Za-z_]\w*")


class HeaderError(ElkError):
    """A binding asked for a declaration its header does not have."""


def _statements(text: str) -> list[str]:
    """Top-level statements (each ending in ';'), braces of struct bodies kept inside theirs."""
    out, cur, depth = [], [], 0
    for ch in text:
        if ch == "}" and depth == 0:  # the brace closing `extern "C" {` (its opening one is removed)
            continue
        cur.append(ch)
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == ";" and depth == 0:
            out.append("".join(cur).strip())
            cur = []
    return out


def _declared_name(stmt: str) -> str | None:
    """The name a statement declares: a typedef's new type name, a prototype's function name (the
    identifier before its first '('), else None."""
    if stmt.startswith("typedef"):
        fn_ptr = re.search(r"\(\s*\*\s*([A-Za-z_]\w*)\s*\)", stmt)
        names = [fn_ptr.group(1)] if fn_ptr else _IDENT.findall(stmt.rsplit("}", 1)[-1])
        return names[-1] if names else None
    head = stmt.split("(", 1)[0] if "(" in stmt else ""
    names = _IDENT.findall(head)
    return names[-1] if names else None


def declarations(path: pathlib.Path, *, names=None, opaque=()) -> str:
    """The header's declarations as cdef text. names: keep only the typedefs and prototypes that
    declare these names, in header order (None = every statement). opaque: struct typedefs defined in other headers, declared here as
    incomplete types (`typedef struct X X;`) so pointers to them parse."""
    text = _COMMENT.sub(" ", pathlib.Path(path).read_text())
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    text = text.replace('extern "C" {', "")
    stmts = _statements(text)
    if names is not None:
        wanted = set(names)
        stmts = [s for s in stmts if _declared_name(s) in wanted]
        missing = wanted - {_declared_name(s) for s in stmts}
        if missing:
            raise HeaderError(f"{path}: no declaration of {', '.join(sorted(missing))}")
    head = [f"typedef struct {name} {name};" for name in opaque]
    return "\n".join(head + stmts) + "\n"
