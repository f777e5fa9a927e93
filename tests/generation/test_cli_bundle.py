"""Bundles and the CLI: ``export --generation`` writes what ``generate --onnx`` runs alone."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from lbdl_graph.errors import GenerationError
from lbdl_graph.frontends import manual_seed
from lbdl_graph.frontends.cli import main
from lbdl_graph.frontends.generation import generate
from lbdl_graph.frontends.generation.bundle import export_generation, load_generation
from lbdl_graph.frontends.zoo import GPT, ZOO, GPTConfig

from ..cli.helpers import cli, fails
from .helpers import tiny_gpt

pytest.importorskip("tokenizers")

from lbdl_graph.frontends.generation.tokenizer import Tokenizer


def _ids(text: str) -> list[int]:
    return [int(t) for t in re.findall(r"\[(\d+)\]", text)]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bundle") / "gpt_tiny"
    assert main(["export", "gpt_tiny", "-o", str(d), "--generation"]) == 0
    return d


def test_export_writes_one_copy_of_the_weights(tiny_bundle: Path) -> None:
    names = {p.name for p in tiny_bundle.iterdir()}
    assert names == {"prefill.onnx", "decode.onnx", "weights.data", "generation_config.json"}
    model = ZOO["gpt_tiny"].model()
    big = [p.data.nbytes for _, p in model.named_parameters() if p.data.nbytes >= 1024]
    size = (tiny_bundle / "weights.data").stat().st_size
    assert sum(big) <= size <= sum(big) + 64 * len(big)  # shared by prefill and decode
    config = json.loads((tiny_bundle / "generation_config.json").read_text())
    assert config["vocab_size"] == 32 and config["context"] == 16
    assert len(config["layers"]) == 2 and config["files"]["tokenizer"] is None


def test_cli_generate_from_the_bundle_equals_python(tiny_bundle: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--onnx", str(tiny_bundle), "--prompt-ids", "1,2,3",
                 "--temperature", "0", "--max-new-tokens", "6"]) == 0
    got = capsys.readouterr()
    manual_seed(0)
    want = generate(ZOO["gpt_tiny"].model(), [1, 2, 3], 6).tokens[0]
    assert _ids(got.out) == want
    assert "tokens/s" in got.err and "prefill" in got.err


def test_bundle_with_bpe_tokenizer_streams_text(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    tok = Tokenizer.train(["def scan(s, idx):\n    return s[idx:]\n" * 20], vocab_size=300)
    manual_seed(3)
    lm = GPT(GPTConfig(vocab_size=300, context=32, num_layers=1, d_model=16, num_heads=2,
                       dropout=0.0, init_std=0.3))
    export_generation(lm, tmp_path / "b", tokenizer=tok, precision="float16",
                      defaults={"max_new_tokens": 5, "temperature": 0.0})
    assert (tmp_path / "b" / "tokenizer.json").is_file()
    assert main(["generate", str(tmp_path / "b"), "--prompt", "def scan(", "--echo"]) == 0
    got = capsys.readouterr()
    assert got.out.startswith("def scan(")
    b = load_generation(tmp_path / "b")
    assert b.tokenizer is not None
    out = generate(b.runner, b.tokenizer.encode("def scan("), 5)
    assert got.out.rstrip("\n") == "def scan(" + b.tokenizer.decode(out.tokens[0])
    assert "5 tokens (length)" in got.err


def test_bundle_runs_as_fp16_and_q8(tmp_path: Path) -> None:
    model = tiny_gpt(4)
    ref = generate(model, [1, 5, 9, 2], 8).tokens
    for prec, q in (("float16", None), ("float32", "q8_0")):
        d = tmp_path / f"{prec}-{q}"
        export_generation(model, d, precision=prec, quantize=q)
        b = load_generation(d, threads=1)
        assert generate(b.runner, [1, 5, 9, 2], 8).tokens == ref, (prec, q)


def test_bad_bundles_are_typed_errors(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match="no such directory"):
        load_generation(tmp_path / "nothing")
    with pytest.raises(GenerationError, match=r"generation_config\.json is missing"):
        load_generation(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_bundle.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "generation_config.json").write_text("{not json")
    with pytest.raises(GenerationError, match="not valid JSON"):
        load_generation(broken)
    config = json.loads((tiny_bundle / "generation_config.json").read_text())
    config["files"]["decode"] = "../decode.onnx"
    (broken / "generation_config.json").write_text(json.dumps(config))
    with pytest.raises(GenerationError, match="must be a file name in the bundle"):
        load_generation(broken)
    config["files"]["decode"] = "decode.onnx"
    config["vocab_size"] = 33
    (broken / "generation_config.json").write_text(json.dumps(config))
    with pytest.raises(GenerationError, match="vocab_size 33"):
        load_generation(broken)
    os.remove(broken / "weights.data")
    config["vocab_size"] = 32
    (broken / "generation_config.json").write_text(json.dumps(config))
    with pytest.raises(GenerationError, match="cannot open the bundle"):
        load_generation(broken)


def test_cli_failures_have_no_traceback(tiny_bundle: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    fails(cli("generate", "--onnx", str(tmp_path), "--prompt-ids", "1"), 1, "GenerationError",
          "generation_config.json is missing")
    for args, words in (
            (["--top-p", "2"], "top_p must be in (0, 1]"),
            (["--prompt-ids", ",".join(["1"] * 17)], "longer than the model's context of 16"),
            (["--prompt-ids", "1,99"], "token id 99 is not in the vocabulary [0, 32)")):
        argv = ["generate", "--onnx", str(tiny_bundle), "--prompt-ids", "1", *args]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "GenerationError" in err and words in err and "Traceback" not in err
    for argv, words in ((["generate", "--prompt", "x"], "give a MODEL"),
                        (["export", "gpt_tiny", "-o", str(tmp_path / "x.onnx"), "--quantize",
                          "q8_0"], "--quantize only applies with --generation")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and words in capsys.readouterr().err


def test_generate_zoo_model_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "gpt_tiny", "--prompt-ids", "4 5", "--max-new-tokens", "3",
                 "--backend", "numpy", "--temperature", "1.0", "--top-k", "3"]) == 0
    got = capsys.readouterr()
    assert len(_ids(got.out)) == 3
    assert np.all(np.array(_ids(got.out)) < 32)


def test_cli_shared_cache_bundle_generates_as_python(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "shared"
    assert main(["export", "gpt_tiny", "-o", str(d), "--generation", "--shared-cache"]) == 0
    assert json.loads((d / "generation_config.json").read_text())["cache"] == "shared"
    decode = onnx.load(str(d / "decode.onnx"), load_external_data=False)
    assert "GroupQueryAttention" in {n.op_type for n in decode.graph.node}
    capsys.readouterr()
    assert main(["generate", "--onnx", str(d), "--prompt-ids", "1,2,3", "--temperature", "0",
                 "--max-new-tokens", "6"]) == 0
    manual_seed(0)
    assert _ids(capsys.readouterr().out) == generate(ZOO["gpt_tiny"].model(), [1, 2, 3],
                                                     6).tokens[0]
    assert main(["export", "gpt_tiny", "-o", str(tmp_path / "h"), "--generation",
                 "--shared-cache", "--precision", "float16"]) == 1
    assert "shared KV cache exports in float32" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", "gpt_tiny", "-o", str(tmp_path / "x.onnx"), "--shared-cache"])
    assert e.value.code == 2 and "--shared-cache only applies with --generation" in \
        capsys.readouterr().err
