"""A tokenizer with more tokens than the model has embedding rows is refused by `elk pack` in one line
that names the file the tokenizer came from (the --tokenizer file, or the folder's tokenizer.model) and
both sizes. Before, the line named neither file."""

import shutil

from conftest import fixture_path, run_elk
from convert_variants_ref import base_config, random_weights, write_hf_folder


def _refusal(*args):
    r = run_elk("pack", *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("elk: error: ") and "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip()


def test_pack_names_the_tokenizer_file_whose_size_exceeds_the_llama2c_vocab_size(tmp_path):
    tok = fixture_path("tokenizer.model")
    line = _refusal(fixture_path("stories260K.bin"), "--tokenizer", tok, "-o", tmp_path / "x.elk")
    assert line == f"elk: error: {tok}: tokenizer has 32000 tokens, model vocab_size is 512"
    assert not (tmp_path / "x.elk").exists()


def test_pack_names_the_tokenizer_file_given_for_a_gguf_checkpoint(tmp_path):
    tok = fixture_path("tokenizer.model")
    line = _refusal(fixture_path("stories260K.gguf"), "--tokenizer", tok, "-o", tmp_path / "x.elk")
    assert line == f"elk: error: {tok}: tokenizer has 32000 tokens, model vocab_size is 512"


def test_pack_names_the_hf_folders_own_tokenizer_model(tmp_path):
    c = base_config(vocab_size=500)
    write_hf_folder(tmp_path / "m", c, random_weights(c))
    shutil.copy(fixture_path("tokenizer.model"), tmp_path / "m" / "tokenizer.model")
    line = _refusal(tmp_path / "m", "-o", tmp_path / "x.elk")
    assert line == f"elk: error: {tmp_path / 'm' / 'tokenizer.model'}: tokenizer has 32000 tokens, model vocab_size is 500"
