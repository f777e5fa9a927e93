"""Generative adversarial networks (book, "The missing bits"): a WGAN-GP on a 2-D point cloud,
with the gradient penalty's second-order training step compiled, exported and run on ONNX
Runtime.

A generator MLP maps 8-D Gaussian noise to points; a critic MLP scores points. The data are a
ring of 8 Gaussian blobs. Training alternates 5 critic steps and 1 generator step (Gulrajani
et al. 2017). The critic loss is ``D(fake) - D(real) + 10 (||grad_x D(x_hat)|| - 1)^2`` on
random interpolates ``x_hat`` of real and fake points: the input gradient comes from
``passes.autodiff.grad`` (a graph), the penalty is written on it with the DSL, and
``make_train_step`` differentiates the whole again w.r.t. the critic's weights (a
second-order gradient) into one training-step graph. That step runs on ONNX Runtime every
iteration (``OrtStatefulRunner``); it is also saved as an ONNX file and one step is compared
with the NumPy interpreter. The generator step sees the critic's weights as inputs. Samples
are compared with the data by the energy distance, the blobs covered and the share of points
near a blob, against the untrained generator and a Gaussian of the data's mean and covariance.

    python examples/gan_2d.py                     # 1500 generator steps (about 10 s)
"""

from __future__ import annotations

import numpy as np
from _common import agreement, blobs, check_onnx, parse_args, report_blobs, stage

from lbdl_graph.backends.numpy import Interpreter
from lbdl_graph.backends.onnx import OrtRunner, save_onnx
from lbdl_graph.builder import GraphBuilder
from lbdl_graph.frontends import InputSpec, Module, Tensor, manual_seed, nn, trace
from lbdl_graph.frontends.training.runners import make_eval_runner, make_step_runner
from lbdl_graph.passes.autodiff import grad
from lbdl_graph.passes.optim import Adam
from lbdl_graph.passes.train_step import TrainStep, make_train_step, params_to_inputs

LATENT, HIDDEN, N_CRITIC, GP_WEIGHT = 8, 64, 5, 10.0


def mlp(n_in: int, n_out: int) -> nn.Sequential:
    """Three ReLU layers of HIDDEN units."""
    return nn.Sequential(nn.Linear(n_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_out))


class WGAN(Module):
    """The generator (noise -> point) and the critic (point -> score)."""

    def __init__(self) -> None:
        super().__init__()
        self.generator, self.critic = mlp(LATENT, 2), mlp(2, 1)


def critic_step(critic: nn.Sequential, lr: float) -> TrainStep:
    """The critic's WGAN-GP training step: first-order input gradient, penalty, then the
    parameter gradient of the whole (second order) and the Adam update."""
    def scores(real: Tensor, fake: Tensor, x_hat: Tensor) -> dict[str, Tensor]:
        # the samples are independent, so d(sum_n D(x_hat_n))/dx_hat is each sample's gradient
        return {"d_hat": critic(x_hat).sum(), "d_real": critic(real).mean(),
                "d_fake": critic(fake).mean()}

    fwd = trace(scores, {k: ("N", 2) for k in ("real", "fake", "x_hat")}, module=critic,
                name="critic")
    dx = grad(fwd, "d_hat", wrt="x_hat")  # adds output grad:x_hat, ordinary IR
    b = GraphBuilder.from_graph(dx)
    with b:
        g = Tensor(dx.values["grad:x_hat"])
        penalty = ((((g * g).sum(1) + 1e-12).sqrt() - 1.0) ** 2).mean()
        w_dist = Tensor(dx.values["d_real"]) - Tensor(dx.values["d_fake"])
        loss = penalty * GP_WEIGHT - w_dist
    graph = b.build({"loss": loss.value, "penalty": penalty.value, "w_distance": w_dist.value},
                    name="critic_gp", prune=True)
    return make_train_step(graph, Adam(lr, 0.5, 0.9))


def generator_step(gan: WGAN, lr: float) -> TrainStep:
    """The generator's step: -D(G(z)), with the critic's weights as inputs (not trained)."""
    gan.critic.requires_grad_(False)
    fwd = trace(lambda z: {"loss": -gan.critic(gan.generator(z)).mean()},
                {"z": ("N", LATENT)}, module=gan, name="generator")
    gan.critic.requires_grad_(True)
    fwd = params_to_inputs(fwd, [p.name for p in fwd.params if p.name.startswith("critic.")])
    return make_train_step(fwd, Adam(lr, 0.5, 0.9))


def main() -> None:
    args = parse_args(__doc__, extra={"steps": (int, 1500, "generator steps")})
    steps, batch, n_eval = (3, 64, 200) if args.quick else (args.steps, 128, 2000)
    rng = np.random.default_rng(args.seed)
    manual_seed(args.seed)
    gan = WGAN()
    gen_fwd = trace(gan.generator, [InputSpec(("N", LATENT), name="z")], training=False)
    gen_names = [p.name for p in gen_fwd.params]
    sampler = make_eval_runner(params_to_inputs(gen_fwd, gen_names), args.backend)
    c_step, g_step = critic_step(gan.critic, 1e-3), generator_step(gan, 1e-3)
    critic, gen = make_step_runner(c_step, args.backend), make_step_runner(g_step, args.backend)

    def generate(n: int) -> np.ndarray:
        state = gen.state()
        z = rng.standard_normal((n, LATENT)).astype(np.float32)
        return sampler.run({"z": z, **{k: state[f"generator.{k}"] for k in gen_names}})["output"]

    untrained = generate(n_eval)
    print(f"critic step: {len(c_step.graph.nodes)} nodes (forward, input gradient, penalty, "
          f"second-order parameter gradient, Adam); generator step: {len(g_step.graph.nodes)}")
    with stage(f"training on {args.backend}: {steps} generator steps x {N_CRITIC} critic "
               f"steps, batch {batch}, {gan.num_parameters():,} parameters"):
        for it in range(steps):
            for _ in range(N_CRITIC):
                real, fake = blobs(rng, batch), generate(batch)
                a = rng.random((batch, 1), dtype=np.float32)
                out = critic.step({"real": real, "fake": fake, "x_hat": a * real + (1 - a) * fake})
            weights = {f"critic.{k}": v for k, v in critic.state().items()
                       if f"critic.{k}" in g_step.info.batch}
            gen.step({"z": rng.standard_normal((batch, LATENT)).astype(np.float32), **weights})
            if it % max(1, steps // 5) == 0 or it == steps - 1:
                print(f"  step {it:>4}: critic's Wasserstein estimate "
                      f"{float(out['w_distance']):.3f}, penalty {float(out['penalty']):.4f}")

    batch_feed = {"real": real, "fake": fake, "x_hat": a * real + (1 - a) * fake}
    args.out.mkdir(parents=True, exist_ok=True)
    path = save_onnx(c_step.graph, args.out / "gan_critic_step.onnx")
    feeds = {**batch_feed, **critic.state()}
    ort_step = OrtRunner(path)
    np_out = Interpreter(c_step.graph).run(feeds)
    diff, ok = agreement(np_out, ort_step.run(feeds), ort_step.providers[0])
    print(f"gradient-penalty critic step exported to {path}: onnxruntime vs numpy on one step, "
          f"max abs diff over {len(np_out)} outputs (loss, penalty, new weights and Adam "
          f"moments) {diff:.3g} [{'agree' if ok else 'DISAGREE'}]")
    if not ok:
        raise SystemExit(1)

    ref = blobs(rng, n_eval)
    report_blobs("second data draw (floor)", blobs(rng, n_eval), ref)
    report_blobs("Gaussian fit (baseline)",
                 rng.multivariate_normal(ref.mean(0), np.cov(ref.T), n_eval), ref)
    report_blobs("untrained generator", untrained, ref)
    report_blobs("trained generator", generate(n_eval), ref)

    state = gen.state()
    gan.load_state_dict({k: state.get(k, v) for k, v in gan.state_dict().items()})
    graph = trace(gan.generator, [InputSpec(("N", LATENT), name="z")], training=False)
    check_onnx(graph, {"z": rng.standard_normal((256, LATENT)).astype(np.float32)}, args.out,
               "gan_2d")


if __name__ == "__main__":
    main()
