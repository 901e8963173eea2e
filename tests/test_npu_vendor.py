"""A vendor NPU backend plugs in as docs/npu.md says: tests/c/npu_vendor.c, one C file against the public
elk/npu.h, built with gcc against libelk.so and registered with elk_npu_register, is found by name and
driven by the core runner. Its float requantization agrees with the sim within one output step on every
layer it takes, the layers it declines are handed back to the CPU path with one notice each, a backend of
another ABI version is refused, and its cost slot feeds the runner's NPU time."""

import subprocess

import pytest
from conftest import ROOT, fixture_path

from elk import spec


@pytest.fixture(scope="module")
def vendor_run(host_build, tmp_path_factory):
    from elk.convert import load_model
    from elk.npu.calibrate import build_section
    from elk.npu.section import pack_section

    tmp = tmp_path_factory.mktemp("vendor")
    m = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    (tmp / "npu.bin").write_bytes(pack_section(build_section(m, chunk=32)))
    prog = tmp / "npu-vendor"
    cc = subprocess.run(["gcc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "firmware" / "include"),
                         str(ROOT / "tests" / "c" / "npu_vendor.c"), "-L", str(host_build), "-lelk",
                         f"-Wl,-rpath,{host_build}", "-lm", "-o", str(prog)], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    proc = subprocess.run([str(prog), str(tmp / "npu.bin")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    kv, notices = {}, []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "notice":
            notices.append(value)
        else:
            kv[key] = value
    return kv, notices


def test_vendor_backend_registers_and_is_found_by_name(vendor_run):
    kv, _ = vendor_run
    assert int(kv["register_other_abi"]) == spec.ERRORS["E_INVAL"][0]
    assert int(kv["register"]) == 0 and kv["found"] == "1"


def test_vendor_backend_agrees_with_sim_within_one_step_and_declines_go_to_the_cpu(vendor_run):
    kv, notices = vendor_run
    # stories260K: 5 blocks x 7 linears; w1/w3 have 172 outputs, more than the vendor's 128
    assert int(kv["layers"]) == 35 and int(kv["offloaded_sim"]) == 35
    assert int(kv["offloaded_acme"]) == 25
    assert sorted(notices) == sorted(f"npu: acme declines blk.{b}.{r}; CPU runs it (-8)"
                                     for b in range(5) for r in ("ffn_gate", "ffn_up"))
    assert int(kv["acme_runs"]) == int(kv["chunks_acme"]) == 25 * 2  # 45 tokens: a full and a padded chunk
    assert float(kv["worst_steps"]) <= 1.0001
    assert float(kv["acme_seconds"]) > 0
