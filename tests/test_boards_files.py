"""Board files: every shipped board loads; the loader rejects bad files with one line naming the file
and the field; build flags and emulation commands come from the file alone."""

import pathlib
import re

import pytest

from conftest import ROOT
from elk import boards
from elk.errors import ElkError

REQUIRED_BOARDS = {"host", "qemu-a76", "qemu-max", "qemu-a7", "rpi5", "rk3588", "opi-pc", "ax650n"}
REAL_BOARDS = {"rpi5", "rpi4", "rk3588", "opi-pc", "ax650n"}


def write_variant(tmp_path, base: str, name: str, edit) -> pathlib.Path:
    """Copy boards/<base>.toml to tmp_path/<name>.toml with `edit(text) -> text` applied."""
    text = (ROOT / "boards" / f"{base}.toml").read_text()
    text = re.sub(r'^name = ".*"$', f'name = "{name}"', text, flags=re.M)
    path = tmp_path / f"{name}.toml"
    path.write_text(edit(text))
    return path


def test_boards_shipped_include_emulated_and_real_boards():
    loaded = {b.name: b for b in boards.load_all()}
    assert REQUIRED_BOARDS <= set(loaded)
    assert loaded["qemu-a7"].arch == loaded["opi-pc"].arch == "armv7"
    assert loaded["rk3588"].npu["tops"]["int8"] == 6.0
    assert loaded["ax650n"].npu["tops"] == {"int8": 18.0, "int4": 72.0}
    assert loaded["host"].emulation["kind"] == "native"


def test_boards_real_board_files_cite_a_public_source():
    for name in REAL_BOARDS:
        text = (ROOT / "boards" / f"{name}.toml").read_text()
        assert "Sources:" in text and "http" in text, f"{name}.toml has no cited source"


def test_boards_rejects_missing_field(tmp_path):
    path = write_variant(tmp_path, "qemu-a76", "b1", lambda t: re.sub(r"^ram_mb = .*\n", "", t, flags=re.M))
    with pytest.raises(boards.BoardError, match=r"b1\.toml: missing field 'ram_mb'"):
        boards.load_file(path)


def test_boards_rejects_misspelt_field(tmp_path):
    path = write_variant(tmp_path, "qemu-a76", "b2", lambda t: t.replace("flash_mb =", "flash_mib ="))
    with pytest.raises(boards.BoardError, match=r"b2\.toml: (missing field 'flash_mb'|unknown field 'flash_mib')"):
        boards.load_file(path)


def test_boards_rejects_misspelt_nested_field(tmp_path):
    path = write_variant(tmp_path, "rk3588", "b3", lambda t: t.replace("dma_gbs =", "dma_gb ="))
    with pytest.raises(boards.BoardError, match=r"b3\.toml: (missing|unknown) field 'npu\.dma_gb"):
        boards.load_file(path)


def test_boards_rejects_wrong_type(tmp_path):
    path = write_variant(tmp_path, "qemu-a76", "b4", lambda t: t.replace("ram_mb = 4096", 'ram_mb = "4096"'))
    with pytest.raises(boards.BoardError, match=r"b4\.toml: field 'ram_mb' must be a int, not str"):
        boards.load_file(path)


def test_boards_rejects_bool_where_number_expected(tmp_path):
    path = write_variant(tmp_path, "qemu-a76", "b5", lambda t: t.replace("baud = 460800", "baud = true"))
    with pytest.raises(boards.BoardError, match=r"field 'console\.baud' must be a int, not bool"):
        boards.load_file(path)


def test_boards_rejects_unknown_emulation_kind(tmp_path):
    path = write_variant(tmp_path, "qemu-a76", "b6", lambda t: t.replace('kind = "qemu-aarch64"', 'kind = "qemu-riscv"'))
    with pytest.raises(boards.BoardError, match=r"b6\.toml: field 'emulation\.kind': unknown kind 'qemu-riscv'"):
        boards.load_file(path)


def test_boards_rejects_emulator_for_another_arch(tmp_path):
    path = write_variant(tmp_path, "qemu-a7", "b7", lambda t: t.replace('kind = "qemu-arm"', 'kind = "qemu-aarch64"'))
    with pytest.raises(boards.BoardError, match=r"'qemu-aarch64' cannot run arch 'armv7'"):
        boards.load_file(path)


def test_boards_rejects_qemu_without_cpu(tmp_path):
    path = write_variant(tmp_path, "qemu-a76", "b8", lambda t: t.replace('cpu = "cortex-a76"\nsysroot', "sysroot"))
    with pytest.raises(boards.BoardError, match=r"missing field 'emulation\.cpu'"):
        boards.load_file(path)


def test_boards_rejects_kernel_the_isa_lacks(tmp_path):
    path = write_variant(tmp_path, "qemu-a76", "b9",
                         lambda t: t.replace('kernels = ["neon_dotprod", "neon"]', 'kernels = ["neon_i8mm"]'))
    with pytest.raises(boards.BoardError, match=r"field 'kernels': 'neon_i8mm' needs isa i8mm"):
        boards.load_file(path)


def test_boards_rejects_toolchain_of_another_arch(tmp_path):
    path = write_variant(tmp_path, "qemu-a7", "b10",
                         lambda t: t.replace('toolchain = "arm-linux-gnueabihf"', 'toolchain = "aarch64-linux-gnu"'))
    with pytest.raises(boards.BoardError, match=r"field 'toolchain': 'aarch64-linux-gnu' does not build armv7"):
        boards.load_file(path)


def test_boards_rejects_npu_tops_for_undeclared_dtype(tmp_path):
    path = write_variant(tmp_path, "rk3588", "b11", lambda t: t.replace("tops = { int8 = 6.0 }", "tops = { int2 = 6.0 }"))
    with pytest.raises(boards.BoardError, match=r"field 'npu\.tops\.int2'"):
        boards.load_file(path)


def test_boards_rejects_name_that_differs_from_file(tmp_path):
    path = tmp_path / "other.toml"
    path.write_text((ROOT / "boards" / "rpi5.toml").read_text())
    with pytest.raises(boards.BoardError, match=r"other\.toml: field 'name': 'rpi5' must match"):
        boards.load_file(path)


def test_boards_rejects_invalid_toml_with_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ElkError, match=r"bad\.toml"):
        boards.load_file(path)


def test_boards_unknown_name_lists_the_valid_ones():
    with pytest.raises(boards.BoardError) as e:
        boards.load("rpi9")
    assert "unknown board 'rpi9'" in str(e.value)
    for name in REQUIRED_BOARDS:
        assert name in str(e.value)


def test_boards_new_board_file_needs_no_code(tmp_path):
    path = write_variant(tmp_path, "rpi5", "my-a76", lambda t: t.replace("ram_mb = 8192", "ram_mb = 2048"))
    b = boards.load(str(path))
    assert (b.name, b.ram_mb, b.arch) == ("my-a76", 2048, "aarch64")


def test_boards_aarch64_common_code_targets_armv8_0_tuned_for_the_board_cpu():
    """The common code of an AArch64 board may use no extension (the run-time fallback to plain NEON
    must not meet an SDOT or LSE atomic elsewhere); armv7 boards name their -mcpu; host is native."""
    host = boards.load("host")
    assert host.cpu_flags() == ["-march=native"]
    for b in boards.load_all():
        if b.arch == "aarch64":
            assert b.cpu_flags() == ["-march=armv8-a", f"-mtune={b.cpu}"], b.name
        elif b.toolchain:
            assert b.cpu_flags() == [f"-mcpu={b.cpu}"], b.name
    a7 = boards.load("qemu-a7")
    assert "-mfloat-abi=hard" in a7.cflags and "-mfpu=neon-vfpv4" in a7.cflags


def test_boards_only_the_extension_kernel_files_get_the_extension():
    files = dict(boards.load("qemu-max").kernel_files())
    assert files == {"neon_i8mm": ["-march=armv8.2-a+dotprod+i8mm", "-mtune=cortex-a76"],
                     "neon_dotprod": ["-march=armv8.2-a+dotprod", "-mtune=cortex-a76"], "neon": []}


def test_boards_emulation_command_comes_from_the_file():
    assert boards.load("qemu-a76").run_prefix() == [
        "qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu", "-cpu", "cortex-a76"]
    assert boards.load("qemu-a7").run_prefix()[-2:] == ["-cpu", "cortex-a7"]
    assert boards.load("host").run_prefix() == []


def test_boards_rejects_flash_a_32bit_board_cannot_map(tmp_path):
    path = write_variant(tmp_path, "qemu-a7", "b12", lambda t: t.replace("flash_mb = 512", "flash_mb = 8192"))
    with pytest.raises(boards.BoardError, match=r"field 'flash_mb': 8192 MB cannot be mapped by a 32-bit process"):
        boards.load_file(path)


def test_boards_real_board_figures_match_their_datasheets():
    """Figures the cited public sources state (not the loader's output): core types and counts,
    DRAM peak = transfer rate x bus width, NPU TOPS; and every real board file marks its assumptions."""
    b = {x.name: x for x in boards.load_all()}
    assert (b["rpi5"].cpu, b["rpi5"].cpu_cores, b["rpi5"].isa) == ("cortex-a76", 4, ["neon", "fp16", "dotprod"])
    assert b["rpi5"].mem_bandwidth_gbs == pytest.approx(4267e6 * 4 / 1e9, abs=0.05)  # LPDDR4X-4267, 32-bit
    assert b["rpi5"].ram_mb in (4096, 8192)  # the launch variants
    assert (b["rk3588"].cpu_cores, b["rk3588"].npu["tops"]["int8"]) == (8, 6.0)  # 4x A76 + 4x A55, 6 TOPS
    assert b["rk3588"].mem_bandwidth_gbs <= 34.0  # "up to 34 GB/s"
    assert {"int4", "int8", "int16", "fp16"} == set(b["rk3588"].npu["dtypes"])
    assert (b["ax650n"].cpu, b["ax650n"].cpu_cores) == ("cortex-a55", 8)
    assert b["ax650n"].npu["tops"] == {"int8": 18.0, "int4": 72.0}
    assert "i8mm" not in b["ax650n"].isa  # Cortex-A55: ARMv8.2 + dotprod, no i8mm
    assert (b["opi-pc"].arch, b["opi-pc"].cpu, b["opi-pc"].cpu_cores) == ("armv7", "cortex-a7", 4)
    assert (b["rpi4"].cpu, b["rpi4"].isa) == ("cortex-a72", ["neon"])  # ARMv8.0: no dotprod
    for name in REAL_BOARDS:
        assert "ssum" in (ROOT / "boards" / f"{name}.toml").read_text(), f"{name}.toml marks no assumption"
