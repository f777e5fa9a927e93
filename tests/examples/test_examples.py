"""Every script in ``examples/`` runs end to end with ``--quick`` (a few training steps): exit
status 0, its measurement lines printed, and ONNX Runtime agreeing with NumPy on the exported
model. Each script runs in its own process, with ``--out`` in a temporary directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: script -> regular expressions its output must contain (besides the ONNX check line)
EXPECTED: dict[str, list[str]] = {
    "classic_cnns.py": [r"baselines: majority class \d\.\d{3}, logistic regression on the 64 "
                        r"pixels \d\.\d{3}",
                        *(rf"{m} +[\d,]+ parameters +untrained \d\.\d{{3}} +trained \d\.\d{{3}}"
                          for m in ("AlexNet", "VGG-16", "GoogLeNet")),
                        r"classic_cnns_googlenet\.onnx .* \[agree within"],
    "classify_digits.py": [r"loss curves numpy vs onnxruntime: max abs difference per epoch",
                           r"held-out accuracy: trained on numpy \d\.\d{3}",
                           r"held-out accuracy: trained on onnxruntime \d\.\d{3}"],
    "capsules_digits.py": [r"held-out accuracy: majority class \d\.\d{3}, untrained CapsNet "
                           r"\d\.\d{3}, CNN baseline \d\.\d{3}",
                           r"held-out accuracy: CapsNet, 3 routing round\(s\) \d\.\d{3}",
                           r"held-out accuracy: CapsNet, 1 routing round\(s\) \d\.\d{3}",
                           r"shifted by one pixel: CNN baseline \d\.\d{3}, CapsNet, 3 routing "
                           r"round\(s\) \d\.\d{3}",
                           r"inference graph: \d+ nodes, 2 routing softmax node\(s\)"],
    "denoising_autoencoder.py": [r"PSNR vs clean test images: noisy input +\d+\.\d+ dB",
                                 r"PSNR vs clean test images: trained autoencoder +\d+\.\d+ dB"],
    "detection.py": [r"best anchor without regression: mean IoU",
                     r"trained +detector: recall@0\.5 \d\.\d{3} +precision@0\.5"],
    "segmentation.py": [r"all background +pixel accuracy", r"trained U-Net +pixel accuracy "
                        r"\d\.\d{3} +mIoU \d\.\d{3}"],
    "clip_contrastive.py": [r"temperature: initial 0\.0700, learned",
                            r"trained +zero-shot caption accuracy \d\.\d{3}"],
    "dqn_gridworld.py": [r"random policy +mean return", r"trained DQN \(greedy\) +mean return",
                         r"optimal \(BFS\) +mean return"],
    "generate_text.py": [r"held-out cross-entropy \(nats/char\): uniform .* GPT \d\.\d{3}",
                         r"KV cache \(onnxruntime, \d+ tokens/s\) vs full recompute \(numpy\): "
                         r"identical", r"--- GPT sample at temperature 0\.5",
                         r"--- GPT sample at temperature 1\.0"],
    "bpe_gpt.py": [r"held-out cross-entropy: uniform 6\.931, unigram \d\.\d{3}, GPT \d\.\d{3} "
                   r"nats/token = \d\.\d{3} nats/char", r"generation bundle: .*bpe_gpt_bundle",
                   r"--- BPE GPT sample, temperature 0\.8, top-k 40 \(24 tokens"],
    "diffusion_2d.py": [r"Gaussian fit \(baseline\) +energy distance",
                        r"trained DDPM +energy distance \d+\.\d{4} +blobs covered \d/8"],
    "gan_2d.py": [r"second-order parameter gradient",
                  r"gradient-penalty critic step exported to .*gan_critic_step\.onnx: "
                  r"onnxruntime vs numpy on one step, .* \[agree\]",
                  r"trained generator +energy distance"],
    "merge_coefficients.py": [r"validation loss \d+\.\d{3} -> \d+\.\d{3}; learned",
                              r"held-out accuracy on all 10 digits: task arithmetic, learned",
                              r"onnxruntime vs numpy merged parameters, max abs diff"],
    "seq2seq_attention.py": [r"held-out exact match \(500 sequences of 10\): copy the input",
                             r"no attention \(baseline\) +\d\.\d{3}",
                             r"additive attention +\d\.\d{3} +\(per symbol"],
    "gnn_communities.py": [r"held-out node accuracy: features only \(no edges\)",
                           r"held-out node accuracy: trained GCN +\d\.\d{3}"],
    "lstm_language_model.py": [r"held-out cross-entropy \(nats/char\): .* LSTM \d\.\d{3}",
                               r"--- LSTM sample at temperature 0\.7"],
    "bert_pretraining.py": [r"held-out masked-token accuracy \(15% masked\): most frequent "
                            r"token \d\.\d{3}, left-neighbour bigram \d\.\d{3}, pre-trained "
                            r"BERT \d\.\d{3}",
                            r"from scratch: validation accuracy by learning rate .* test "
                            r"\d\.\d{3} \(\+- \d\.\d{3}\)",
                            r"pre-trained: validation accuracy by learning rate .* test "
                            r"\d\.\d{3} \(\+- \d\.\d{3}\)",
                            r"majority class \d\.\d{3}; linear probe .* random encoder "
                            r"\d\.\d{3}, pre-trained encoder \d\.\d{3}"],
    "speech_recognition.py": [r"token error rate: trivial \(digit \d x \d\) \d\.\d{3}, "
                              r"untrained \d\.\d{3}, trained Whisper \d\.\d{3}"],
    "rag.py": [r"TF-IDF bag of words +recall@1 \d\.\d{3}",
               r"trained embedder +recall@1 \d\.\d{3} +recall@3",
               r"reader by epoch: training loss( \d+\.\d{3}){2}; validation answer "
               r"accuracy( \d\.\d{3}){2}",
               r"closed book \(no retrieval\) +\d\.\d{3}", r"random passage +\d\.\d{3}",
               r"retrieved top-2 passages +\d\.\d{3}", r"top-2, in reverse order +\d\.\d{3}",
               r"oracle passage +\d\.\d{3}",
               r"KV-cache bundle on onnxruntime"],
    "saliency.py": [r"held-out accuracy: trained \d\.\d{3}, majority class",
                    r"random ink pixels \(baseline\) +\d\.\d{3}",
                    r"integrated gradients +\d\.\d{3}", r"pictures: .*saliency\.png"],
    "relation_network.py": [r"held-out accuracy: majority answer per type \(baseline\) +"
                            r"non-relational \d\.\d{3} +relational \d\.\d{3}",
                            r"held-out accuracy: MLP, same steps \(baseline\) +non-relational",
                            r"held-out accuracy: relation network +non-relational \d\.\d{3} +"
                            r"relational \d\.\d{3} +\(per type( \d\.\d\d){7}\)"],
    "siamese_digits.py": [r"verification on held-out images of the seen digits 0-5",
                          r"raw pixels +accuracy \d\.\d{3}  ROC AUC \d\.\d{3}",
                          r"untrained encoder +accuracy \d\.\d{3}  ROC AUC \d\.\d{3}",
                          r"trained Siamese +accuracy \d\.\d{3}  ROC AUC \d\.\d{3}",
                          r"verification on digits 6-9, never seen in training"],
    "remat_checkpointing.py": [r"peak activations [\d.]+ MiB -> [\d.]+ MiB",
                               r"losses bit-identical True, final weights and Adam moments "
                               r"bit-identical True"],
}
ONNX_LINE = r"onnx: wrote .*\.onnx .* onnxruntime \(\w+\) vs numpy .* \[agree within"


def test_every_example_is_tested() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_quick(script: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=180,
                          cwd=EXAMPLES.parent)
    out = proc.stdout
    assert proc.returncode == 0, f"{script} failed:\n{out}\n{proc.stderr}"
    for pattern in [*EXPECTED[script], ONNX_LINE]:
        assert re.search(pattern, out), f"{script}: no line matches {pattern!r}:\n{out}"
    assert list(tmp_path.glob("*.onnx")), f"{script} wrote no ONNX model"


def test_classify_digits_backends_train_identically(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / "classify_digits.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=180,
                          cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stderr
    gap = re.search(r"max abs difference per epoch ([\d.e+-]+)", proc.stdout)
    assert gap is not None and float(gap.group(1)) < 1e-5, proc.stdout
    accs = re.findall(r"trained on \w+ (\d\.\d{3})", proc.stdout)
    assert len(accs) == 2 and accs[0] == accs[1], proc.stdout


def test_siamese_triplet_branch_runs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / "siamese_digits.py"), "--quick",
                           "--loss", "triplet", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=180, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\d+ steps of 64 triplets, [\d,]+ shared parameters, triplet loss",
                     proc.stdout), proc.stdout
    assert re.search(r"trained Siamese +accuracy \d\.\d{3}  ROC AUC", proc.stdout), proc.stdout
    assert re.search(ONNX_LINE, proc.stdout), proc.stdout
