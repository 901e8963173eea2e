"""The cffi bindings read their declarations from the C headers (elk.cheader), so a prototype changed
in the header is the one Python calls; these tests hold the reader's rules on small headers."""

import cffi
import pytest

from elk import cheader


HEADER = """/* a header comment; with a semicolon */
#ifndef X_H
#define X_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
typedef struct thing thing;   // opaque
int thing_open(const char *path, /* inline comment */ thing **out);
typedef struct view { uint32_t n; float *v; } view;
const char *thing_name(const thing *t);
#ifdef __cplusplus
}
#endif
#endif
"""


def test_cheader_keeps_declarations_and_drops_comments_and_preprocessor(tmp_path):
    h = tmp_path / "x.h"
    h.write_text(HEADER)
    text = cheader.declarations(h)
    assert "#" not in text and "comment" not in text and "extern" not in text
    ffi = cffi.FFI()
    ffi.cdef(text)  # cffi accepts it as is
    assert ffi.typeof("view").fields[0][0] == "n"
    assert "thing_open" in text and "thing_name" in text and "struct view" in text


def test_cheader_names_picks_only_those_prototypes(tmp_path):
    h = tmp_path / "x.h"
    h.write_text(HEADER)
    text = cheader.declarations(h, names=["thing_name"])
    assert text.strip() == "const char *thing_name(const thing *t);"


def test_cheader_names_missing_from_the_header_is_an_error(tmp_path):
    h = tmp_path / "x.h"
    h.write_text(HEADER)
    with pytest.raises(cheader.HeaderError, match="thing_close"):
        cheader.declarations(h, names=["thing_name", "thing_close"])


def test_cheader_opaque_types_let_pointers_to_foreign_structs_parse(tmp_path):
    h = tmp_path / "y.h"
    h.write_text("const backend *get_backend(void);\n")
    with pytest.raises(cffi.CDefError):
        cffi.FFI().cdef(cheader.declarations(h))
    cffi.FFI().cdef(cheader.declarations(h, opaque=["backend"]))


def test_cheader_runtime_bindings_declare_every_function_of_their_headers():
    import re

    from elk import runtime
    from elk.npu import native

    for text, header in ((runtime.cdef(), "host_api.h"), (native.cdef(), "npu_host.h")):
        src = (runtime.FIRMWARE / "platform" / "posix" / header).read_text()
        in_header = set(re.findall(r"\b(elk_host\w*)\s*\(", src))
        assert in_header and in_header <= set(re.findall(r"\b(elk_\w+)\s*\(", text))


def test_runtime_stop_reasons_follow_enum_elk_gen_stop_in_elk_h():
    import re

    from elk import runtime

    src = (runtime.FIRMWARE / "include" / "elk" / "elk.h").read_text()
    body = re.search(r"enum elk_gen_stop \{(.*?)\};", src, re.S).group(1)
    enum = {int(v): k.lower() for k, v in re.findall(r"ELK_GEN_(\w+)\s*=\s*(\d+)", body)}
    assert enum and enum == runtime.STOP_REASONS


def test_cheader_names_picks_typedefs_by_their_type_name(tmp_path):
    h = tmp_path / "x.h"
    h.write_text(HEADER + "typedef uint64_t (*clock_fn)(void *ctx);\n")
    assert cheader.declarations(h, names=["view"]).strip() == "typedef struct view { uint32_t n; float *v; } view;"
    assert cheader.declarations(h, names=["clock_fn"]).strip() == "typedef uint64_t (*clock_fn)(void *ctx);"
    assert cheader.declarations(h, names=["thing"]).strip() == "typedef struct thing thing;"
