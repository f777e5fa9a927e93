"""Contrastive image-text learning (book section 6.6, CLIP): match digit pictures to captions.

Images are 16x16 canvases with a scikit-learn 8x8 digit in one of the four corners, plus
pixel noise; their captions are character strings such as ``"seven top left"`` tokenised by
character, ending with an end-of-text token (the largest id, where CLIP reads the text
feature). The zoo's ``CLIP`` (a ViT image encoder and a causal GPT text encoder, projected and
L2-normalised) is trained with ``F.info_nce``, the symmetric InfoNCE loss, at the temperature
``exp(-logit_scale)`` learned by the model. Every batch holds the 40 distinct captions once
(one random training digit each), so the N x N similarity matrix has exactly one positive per
row and column. Measured on held-out digits: zero-shot classification (each image against
the 40 captions: full caption and digit alone) and text-to-image retrieval precision@10,
against chance and the untrained model. The trained CLIP is exported to ONNX and ONNX Runtime
is checked against NumPy.

    python examples/clip_contrastive.py           # 600 steps of 40 pairs (about 10 s)
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, digits, parse_args, run_graph, stage

from lbdl_graph.frontends import F, InputSpec, Module, Tensor, manual_seed, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import CLIP, CLIPConfig
from lbdl_graph.passes.optim import Adam, CosineLR, WarmupLR

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PLACES = ("top left", "top right", "bottom left", "bottom right")
CAPTIONS = [f"{w} {p}" for w in WORDS for p in PLACES]  # caption c: digit c // 4, place c % 4
CHARS = sorted(set("".join(CAPTIONS)))
VOCAB = len(CHARS) + 2  # 0 padding, 1.. characters, last: end of text
CONTEXT = max(map(len, CAPTIONS)) + 1


def tokens(captions: list[str]) -> np.ndarray:
    """(n, CONTEXT) int64 ids: characters, end-of-text, zero padding."""
    out = np.zeros((len(captions), CONTEXT), np.int64)
    for i, c in enumerate(captions):
        out[i, :len(c) + 1] = [CHARS.index(ch) + 1 for ch in c] + [VOCAB - 1]
    return out


def canvases(x: np.ndarray, places: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Digits (n, 1, 8, 8) pasted into 16x16 canvases at the given corners, with noise."""
    out = rng.normal(0.0, 0.05, (len(x), 1, 16, 16)).astype(np.float32)
    for i, (img, p) in enumerate(zip(x, places, strict=True)):
        r, c = 8 * (p // 2), 8 * (p % 2)
        out[i, :, r:r + 8, c:c + 8] += img
    return out


class DualEncoder(Module):
    """CLIP's two towers as a pair of normalised embeddings (the loss forms the logits)."""

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.clip = CLIP(config)

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Image and text embeddings (N, embed_dim) each."""
        return self.clip.encode_image(images), self.clip.encode_text(tokens)


def embed(model: DualEncoder, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of ``images`` and of the 40 captions, from eval graphs run on NumPy."""
    img = trace(lambda images: model.clip.encode_image(images),
                {"images": ("N", 1, 16, 16)}, module=model, training=False)
    txt = trace(lambda tokens: model.clip.encode_text(tokens),
                {"tokens": InputSpec(("N", CONTEXT), "int64")}, module=model, training=False)
    return (run_graph(img, {"images": images})["output"],
            run_graph(txt, {"tokens": tokens(CAPTIONS)})["output"])


def scores(model: DualEncoder, images: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """Zero-shot caption accuracy, digit accuracy and text-to-image precision@10."""
    img, txt = embed(model, images)
    sim = img @ txt.T  # (n, 40)
    pred = sim.argmax(1)
    top = np.argsort(-sim.T, axis=1)[:, :10]  # each caption's 10 most similar images
    p10 = float(np.mean(labels[top] == np.arange(len(CAPTIONS))[:, None]))
    return float(np.mean(pred == labels)), float(np.mean(pred // 4 == labels // 4)), p10


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 600, "training steps")})
    steps = 3 if args.quick else args.steps
    xtr, ytr, xte, yte = digits(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    by_digit = [np.flatnonzero(ytr == d) for d in range(10)]
    # each block of 40 pairs: every caption once, with a random training digit of its class
    caption_ids = np.concatenate([rng.permutation(len(CAPTIONS)) for _ in range(steps)])
    picks = np.array([rng.choice(by_digit[c // 4]) for c in caption_ids])
    images = canvases(xtr[picks], caption_ids % 4, rng)
    text = tokens([CAPTIONS[c] for c in caption_ids])
    test_labels = yte * 4 + rng.integers(0, 4, len(yte))
    test_images = canvases(xte, test_labels % 4, rng)
    print(f"data: {len(CAPTIONS)} captions such as {CAPTIONS[29]!r} ({VOCAB} token ids, "
          f"{CONTEXT} per caption); {len(caption_ids)} training pairs, {len(yte)} test images")

    manual_seed(args.seed)
    cfg = CLIPConfig(image_size=16, patch_size=4, in_channels=1, vision_width=48,
                     vision_layers=2, vision_heads=4, vocab_size=VOCAB, context=CONTEXT,
                     text_width=32, text_layers=1, text_heads=4, embed_dim=32)
    model = DualEncoder(cfg)
    scale = model.clip.logit_scale
    untrained = scores(model, test_images, test_labels)
    t0 = float(np.exp(-np.asarray(scale)))

    def loss(out: tuple[Tensor, Tensor], _: Tensor) -> Tensor:
        return F.info_nce(out[0], out[1], temperature=(-scale).exp(), normalize=False)

    with stage(f"training on {args.backend}: {steps} steps of {len(CAPTIONS)} pairs, "
               f"{model.num_parameters():,} parameters, InfoNCE with a learned temperature"):
        hist = fit(model, {"images": images, "tokens": text}, None, loss=loss, epochs=1,
                   batch_size=len(CAPTIONS), shuffle=False, backend=args.backend,
                   optimizer=Adam(WarmupLR(CosineLR(2e-3, steps), min(50, steps))),
                   seed=args.seed, progress=False)
    print(f"InfoNCE loss (mean over the run) {hist['loss'][-1]:.3f}; log(40) = "
          f"{np.log(40):.3f} is the loss of embeddings that carry no information")
    print(f"temperature: initial {t0:.4f}, learned {float(np.exp(-np.asarray(scale))):.4f}")

    print(f"chance: caption 1/40 = {1 / 40:.3f}, digit {1 / 10:.3f}, precision@10 "
          f"{1 / 40:.3f}")
    for name, (cap, dig, p10) in (("untrained", untrained),
                                  ("trained", scores(model, test_images, test_labels))):
        print(f"{name:<9} zero-shot caption accuracy {cap:.3f}  digit accuracy {dig:.3f}  "
              f"text->image precision@10 {p10:.3f}")

    graph = trace(model.clip, {"images": ("N", 1, 16, 16),
                               "tokens": InputSpec(("N", CONTEXT), "int64")}, training=False)
    check_onnx(graph, {"images": test_images[:40], "tokens": tokens(CAPTIONS)}, args.out,
               "clip_contrastive")


if __name__ == "__main__":
    main()
