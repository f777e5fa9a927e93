"""Denoising diffusion (book section 7.2, DDPM): learn to sample a 2-D point cloud.

The data are points from a ring of 8 Gaussian blobs (radius 2, std 0.15). A small MLP noise
predictor written inline in the DSL (the point concatenated with the zoo's sinusoidal
``timestep_embedding`` of t, three SiLU layers of 128) is trained as in Ho et al. (2020): the
*training graph* draws the noise with ``random_normal`` from the step's key, forms
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` with ``a_t`` looked up in the schedule by the int64
timestep t (drawn in NumPy), and regresses eps with the MSE. Sampling runs the 100 reverse
steps of ancestral DDPM in NumPy around the exported denoiser on ONNX Runtime. The samples are
compared with fresh data (and with a Gaussian of the data's mean and covariance, the untrained
denoiser, and a second data draw as the floor) by the energy distance, the number of blobs
covered and the share of points within 3 std of a blob centre. ONNX Runtime is checked
against NumPy on the denoiser.

    python examples/diffusion_2d.py               # 4000 steps of 256 points (about 6 s)
"""

from __future__ import annotations

import numpy as np
from _common import blobs, check_onnx, parse_args, report_blobs, stage

from lbdl_graph.backends.onnx import OrtRunner
from lbdl_graph.frontends import F, InputSpec, Module, Tensor, as_tensor, manual_seed, nn, trace
from lbdl_graph.frontends.training import fit
from lbdl_graph.frontends.zoo import noise_schedule
from lbdl_graph.frontends.zoo._common import randn_like
from lbdl_graph.frontends.zoo.diffusion import timestep_embedding
from lbdl_graph.passes.optim import Adam, CosineLR

STEPS_T = 100
ABAR = noise_schedule(STEPS_T, 1e-4, 0.1)  # cumulative products a_t
BETAS = 1.0 - ABAR / np.concatenate([[1.0], ABAR[:-1]])


class Denoiser(Module):
    """``forward(x, t)``: noisy points (N, 2) and int64 steps (N,) -> predicted noise (N, 2)."""

    def __init__(self, hidden: int = 128, time_dim: int = 32) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(2 + time_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(F.cat([x, timestep_embedding(t, self.time_dim)], -1))


class NoisePrediction(Module):
    """The training graph: noise ``x0`` at step ``t`` in the graph; returns (prediction, eps)."""

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        coef = as_tensor(np.stack([np.sqrt(ABAR), np.sqrt(1.0 - ABAR)], 1).astype(np.float32))
        c = F.embedding(t, coef)  # (N, 2): sqrt(a_t), sqrt(1 - a_t)
        eps = randn_like(x0)
        return self.denoiser(c[:, :1] * x0 + c[:, 1:] * eps, t), eps


def ddpm_sample(runner: OrtRunner, n: int, rng: np.random.Generator) -> np.ndarray:
    """Ancestral sampling: x_T ~ N(0, I), then the 100 reverse steps."""
    x = rng.standard_normal((n, 2)).astype(np.float32)
    for t in reversed(range(STEPS_T)):
        eps = runner.run({"x": x, "t": np.full(n, t, np.int64)})["output"]
        x = (x - BETAS[t] / np.sqrt(1.0 - ABAR[t]) * eps) / np.sqrt(1.0 - BETAS[t])
        if t > 0:
            x = x + np.sqrt(BETAS[t]) * rng.standard_normal((n, 2))
        x = x.astype(np.float32)
    return x


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 4000, "training steps")})
    steps, batch, n_eval = (5, 64, 200) if args.quick else (args.steps, 256, 2000)
    rng = np.random.default_rng(args.seed)
    x0 = blobs(rng, steps * batch)
    t = rng.integers(STEPS_T, size=len(x0)).astype(np.int64)
    manual_seed(args.seed)
    model = NoisePrediction(Denoiser())
    specs = {"x": ("N", 2), "t": InputSpec(("N",), "int64")}
    untrained = OrtRunner(trace(model.denoiser, specs, training=False))
    print(f"data: {len(x0):,} points from 8 blobs (each seen once); {STEPS_T} diffusion steps, "
          f"a_T = {ABAR[-1]:.4f}")
    with stage(f"training on {args.backend}: {steps} steps of {batch}, "
               f"{model.num_parameters():,} parameters, noise drawn in the graph"):
        hist = fit(model, {"x0": x0, "t": t}, None, epochs=1, batch_size=batch,
                   loss=lambda out, _: F.mse_loss(out[0], out[1]), backend=args.backend,
                   optimizer=Adam(CosineLR(2e-3, steps)), seed=args.seed, progress=False)
    print(f"noise-prediction MSE (mean over the run) {hist['loss'][-1]:.4f}; predicting zero "
          "scores 1.0")

    graph = trace(model.denoiser, specs, training=False)
    probe = {"x": blobs(rng, 256), "t": rng.integers(STEPS_T, size=256).astype(np.int64)}
    check_onnx(graph, probe, args.out, "diffusion_2d")
    ref = blobs(rng, n_eval)
    mean, cov = ref.mean(0), np.cov(ref.T)
    with stage(f"sampling {n_eval} points, {STEPS_T} reverse steps on onnxruntime"):
        samples = ddpm_sample(OrtRunner(args.out / "diffusion_2d.onnx"), n_eval, rng)
    report_blobs("second data draw (floor)", blobs(rng, n_eval), ref)
    report_blobs("Gaussian fit (baseline)", rng.multivariate_normal(mean, cov, n_eval), ref)
    report_blobs("untrained denoiser", ddpm_sample(untrained, n_eval, rng), ref)
    report_blobs("trained DDPM", samples, ref)


if __name__ == "__main__":
    main()
