"""Image denoising (book section 6.1): a convolutional denoising autoencoder on 8x8 digits.

The zoo's ``Autoencoder`` with ``noise_std=0.3`` corrupts its input *inside the training
graph* (Gaussian noise drawn by ``random_normal`` from the step's key, so every step sees fresh
noise) and is trained with the MSE between its output and the clean image. At test time the
eval graph adds nothing: we feed images corrupted with the same noise level (seeded NumPy) and
measure the PSNR against the clean images of the noisy input, of a 3x3 mean filter, of the
untrained model and of the trained model. The trained denoiser is exported to ONNX and ONNX
Runtime is checked against NumPy.

    python examples/denoising_autoencoder.py      # 100 epochs (about 5 s)
"""

from __future__ import annotations

import numpy as np
from _common import check_onnx, digits, parse_args, run_graph, stage

from lbdl_graph.frontends import manual_seed, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import Autoencoder, AutoencoderConfig
from lbdl_graph.passes.optim import Adam, CosineLR

NOISE = 0.3
CONFIG = AutoencoderConfig(kind="conv", image_size=8, channels=(16, 32), latent_dim=32,
                           noise_std=NOISE)
BATCH = 32


def psnr(x: np.ndarray, clean: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (mean over the whole set)."""
    mse = float(np.mean((x.astype(np.float64) - clean) ** 2))
    return 10.0 * np.log10(1.0 / mse)


def mean_filter(x: np.ndarray) -> np.ndarray:
    """3x3 box blur with edge replication: the classical baseline denoiser."""
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[-2:]
    return sum(p[..., i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def denoise(model: Autoencoder, noisy: np.ndarray) -> np.ndarray:
    """The eval-mode (noise-free) graph of ``model`` run on NumPy."""
    graph = trace(model, {"x": ("N", 1, 8, 8)}, training=False)
    return run_graph(graph, {"x": noisy})["output"]


def main() -> None:
    args = parse_args(__doc__, extra={"epochs": (int, 100, "training epochs")})
    epochs = 1 if args.quick else args.epochs
    xtr, _, xte, _ = digits(seed=args.seed)
    if args.quick:
        xtr = xtr[:256]
    rng = np.random.default_rng(args.seed + 1)
    noisy = (xte + NOISE * rng.standard_normal(xte.shape)).astype(np.float32)
    print(f"data: {len(xtr)} train / {len(xte)} test digits, Gaussian noise std {NOISE}")

    manual_seed(args.seed)
    model = Autoencoder(CONFIG)
    untrained = denoise(model, noisy)
    steps = epochs * -(-len(xtr) // BATCH)
    with stage(f"training on {args.backend}: {epochs} epoch(s), {steps} steps, "
               f"{model.num_parameters():,} parameters, noise drawn in the graph"):
        hist = fit(model, xtr, None, loss="mse", epochs=epochs, batch_size=BATCH,
                   optimizer=Adam(CosineLR(3e-3, steps)), backend=args.backend,
                   seed=args.seed, progress=False)
    losses = hist["loss"]
    print(f"training MSE (noisy input -> clean target): epoch 1 {losses[0]:.4f}, "
          f"last epoch {losses[-1]:.4f}")

    rows = {"noisy input": noisy, "3x3 mean filter": mean_filter(noisy),
            "untrained autoencoder": untrained, "trained autoencoder": denoise(model, noisy)}
    for name, images in rows.items():
        print(f"PSNR vs clean test images: {name:<22} {psnr(images, xte):6.2f} dB")
    gain = psnr(rows["trained autoencoder"], xte) - psnr(noisy, xte)
    print(f"denoising gain: {gain:+.2f} dB over the noisy input")

    graph = trace(model, {"x": ("N", 1, 8, 8)}, training=False)
    check_onnx(graph, {"x": noisy}, args.out, "denoising_autoencoder")


if __name__ == "__main__":
    main()
