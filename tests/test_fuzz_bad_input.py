"""Bad input on every surface (image, checkpoint, board file, serial line, chat, CLI arguments) through the
real `elk` command and a real emulated board: non-zero exit, one clear error line, no traceback, no hang.
The same cases (fuzz/bad_input.py) produce the table in docs/bad-input.md."""

import re
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "fuzz"))
import bad_input  # noqa: E402


@pytest.fixture(scope="module")
def outcomes(host_build, tmp_path_factory):
    return bad_input.run_all(tmp_path_factory.mktemp("bad"))


def test_bad_input_catalogue_covers_every_surface(outcomes):
    surfaces = {o.case.surface for o in outcomes}
    assert surfaces == {"image", "checkpoint", "board file", "serial", "chat", "CLI"}
    assert len(outcomes) >= 35


def test_bad_input_never_gives_a_traceback_or_hangs(outcomes):
    for o in outcomes:
        text = "\n".join(o.lines)
        assert "Traceback" not in text and "TRACEBACK" not in text, (o.case.tried, text)
        assert o.seconds < 60, (o.case.tried, o.seconds)


def test_bad_input_fails_with_one_clear_line(outcomes):
    for o in outcomes:
        if o.case.succeeds:
            assert o.rc == 0, (o.case.tried, o.lines)
            assert o.case.expect in "\n".join(o.lines), (o.case.tried, o.case.expect, o.lines)
            continue
        assert o.rc == 2, (o.case.tried, o.rc, o.lines)
        lines = [ln for ln in o.lines if not ln.startswith("usage:") and not ln.startswith(" ")]
        assert len(lines) == 1, (o.case.tried, o.lines)  # argparse adds its usage line before the error
        assert re.match(r"^(elk( \w+)?: error: |FAIL )", lines[0]), (o.case.tried, lines[0])
        assert o.case.expect in lines[0], (o.case.tried, o.case.expect, lines[0])


def test_refusals_name_the_reason(outcomes):
    by = {o.case.tried: o.shown for o in outcomes}
    assert "ELK_E_AUTH" in by["flash an unsigned image to a provisioned board"]
    assert "ELK_E_AUTH" in by["flash an image signed by another key to a provisioned board"]
    assert "ELK_E_ROLLBACK" in by["flash an older owner-signed image (security counter 0, board runs 3)"]
    assert "running" in by["factory reset of a running board's flash file"]
    # multi-frame prompts: 20 KB and exactly 32 KiB reach the board (it counts their tokens), one byte more does not
    assert "6002 tokens" in by["20 KB prompt (several frames; 6002 tokens, context 512)"]
    assert "32770 tokens" in by["32768-byte prompt (the board's limit: staged, then too long for the context)"]
    assert "32769 bytes" in by["32769-byte prompt (one byte over the board's 32 KiB)"]
    assert "no model" in by["chat with no model flashed"]
