"""One contender of ``ort_backend.py`` in a process of its own, driven over stdin/stdout.

``python _contender.py KIND MODEL --threads N`` builds one library's side of a model and then
answers one JSON command per line on stdin with one JSON line on stdout:

* ``{"cmd": "check", "task": "train"}``: two train steps, answered with their losses;
* ``{"cmd": "check", "task": "infer_b64", "path": P}``: saves the batch-64 output to ``P`` (.npy);
* ``{"cmd": "time", "task": T, "calls": K, "warmup": W}``: ``W`` untimed calls, then the seconds
  of each of ``K`` calls (wall clock, and CPU time of the calling thread);
* tasks ``grad`` and ``update`` (ort and torch): the step's two halves, forward + backward and
  the optimizer update (see ``train_parts.py``);
* ``{"cmd": "export", "path": P}`` (torch only): PyTorch's own ONNX export of the model;
* ``{"cmd": "quit"}``.

KIND is ``ort`` (our export on ONNX Runtime), ``numpy`` (our NumPy backend), ``torch`` (the torch
twin, eager, ``torch.optim.Adam`` with its default implementation) or ``torch_onnx_ort``
(``--onnx FILE``, PyTorch's export, inference only). Each kind imports only its own library:
the first line it writes names the libraries loaded, so the parent can check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _cases import INFER_BATCHES, LR, Case, make_case

NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
Task = Callable[[], Any]


def _ort_opts(threads: int, spin: bool, providers: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"providers": providers}
    if not spin:
        opts["session_options"] = NO_SPIN
    if threads:
        opts["intra_op_threads"] = threads
    return opts


def _infer_feeds(case: Case) -> dict[int, dict[str, np.ndarray]]:
    return {b: {case.input_name: case.inputs(b, np.random.default_rng(2))} for b in INFER_BATCHES}


def ours(kind: str, case: Case, opts: dict[str, Any]) -> tuple[dict[str, Task], Task]:
    """Our train step and inference on ONNX Runtime (``ort``) or NumPy (``numpy``)."""
    from lbdl_graph.frontends.training.runners import make_step_runner
    from lbdl_graph.frontends.zoo import ZOO

    feed = case.train_feed()
    step = case.train_step()
    graph = ZOO[case.name].trace(case.model, training=False)
    if kind == "ort":
        from lbdl_graph.backends.onnx.runner import OrtRunner

        runner = make_step_runner(step, "onnxruntime", **opts)
        infer: Any = OrtRunner(graph, **opts)
    else:
        from lbdl_graph.backends.numpy import Interpreter

        runner = make_step_runner(step, "numpy")
        infer = Interpreter(graph, training=False)
    tasks: dict[str, Task] = {f"infer_b{b}": (lambda f=f: infer.run(f)["output"])
                              for b, f in _infer_feeds(case).items()}
    if kind == "ort":
        tasks.update(ort_parts(case, opts))
    return tasks, lambda: float(runner.step(feed)["loss"])


def ort_parts(case: Case, opts: dict[str, Any]) -> dict[str, Task]:
    """The two halves of our step on ONNX Runtime (``make_split_train_step``): ``grad`` runs the
    gradient graph (forward + backward) with IOBinding into preallocated outputs, ``update`` the
    optimizer graph with its state kept in ORT memory (ping-pong), on the first step's grads."""
    import onnxruntime as ort

    from lbdl_graph.backends.onnx.runner import OrtRunner
    from lbdl_graph.backends.onnx.stateful import OrtStatefulRunner

    split = case.split_step()
    feed = case.train_feed()
    grad = OrtRunner(split.grad_graph, params_as_inputs=True, **opts)
    values = {**{k: np.asarray(v) for k, v in split.initial_state.items()}, **feed}
    names = [i.name for i in grad.session.get_inputs()]
    first = grad.run({k: values[k] for k in names})
    io = grad.session.io_binding()
    keep = []  # the OrtValues must outlive the binding
    for name in names:
        keep.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(values[name])))
        io.bind_ortvalue_input(name, keep[-1])
    for name, arr in first.items():
        keep.append(ort.OrtValue.ortvalue_from_shape_and_type(arr.shape, arr.dtype, "cpu", 0))
        io.bind_ortvalue_output(name, keep[-1])
    update = OrtStatefulRunner(split.update_graph, {s: f"{s}:next" for s in split.update_state},
                               init={s: split.initial_state[s] for s in split.update_state},
                               **opts)
    grads = {k: v for k, v in first.items() if k.startswith("grad:")}
    return {"grad": lambda: grad.session.run_with_iobinding(io),
            "update": lambda: update.step(grads)}


def torch_side(case: Case, threads: int) -> tuple[dict[str, Task], Task, Any]:
    """The torch twin: eager inference, and forward + cross-entropy + backward + Adam step."""
    import torch
    import torch.nn.functional as TF
    from _torch_twins import twin

    from lbdl_graph.frontends.zoo import ZOO

    if threads:
        torch.set_num_threads(threads)
    feed = case.train_feed()
    tmodel = twin(case.name, ZOO[case.name].config, case.model.state_dict())
    emodel = twin(case.name, ZOO[case.name].config, case.model.state_dict()).eval()
    opt = torch.optim.Adam(tmodel.parameters(), lr=LR)
    tx, ty = torch.from_numpy(feed[case.input_name]), torch.from_numpy(feed["y"])

    def train() -> float:
        opt.zero_grad(set_to_none=True)
        out = tmodel(tx)
        loss = TF.cross_entropy(out.reshape(-1, out.shape[-1]), ty.reshape(-1))
        loss.backward()
        opt.step()
        return float(loss.detach())

    def eager(x: Any) -> np.ndarray:
        with torch.no_grad():
            return emodel(x).numpy()

    def grad() -> None:  # forward + cross-entropy + backward, no optimizer step
        opt.zero_grad(set_to_none=True)
        out = tmodel(tx)
        TF.cross_entropy(out.reshape(-1, out.shape[-1]), ty.reshape(-1)).backward()

    xs = {b: torch.from_numpy(f[case.input_name]) for b, f in _infer_feeds(case).items()}
    tasks: dict[str, Task] = {f"infer_b{b}": (lambda t=x: eager(t)) for b, x in xs.items()}
    tasks.update(grad=grad, update=opt.step)  # update: Adam on the last grad's gradients
    return tasks, train, emodel


def build(kind: str, case: Case, args: argparse.Namespace) -> tuple[dict[str, Task], Any]:
    """The tasks of ``kind`` and, for torch, the eval model (for ``export``)."""
    opts = _ort_opts(args.threads, args.spin, args.providers)
    if kind in ("ort", "numpy"):
        tasks, train = ours(kind, case, opts)
        return {"train": train, **tasks}, None
    if kind == "torch":
        tasks, train, emodel = torch_side(case, args.threads)
        return {"train": train, **tasks}, emodel
    if kind == "torch_onnx_ort":
        from lbdl_graph.backends.onnx.runner import OrtRunner

        runner = OrtRunner(args.onnx, **opts)
        return {f"infer_b{b}": (lambda f=f: runner.run(f)["output"])
                for b, f in _infer_feeds(case).items()}, None
    raise SystemExit(f"unknown contender kind {kind!r}")


def answer(msg: dict[str, Any], case: Case, tasks: dict[str, Task], emodel: Any
           ) -> dict[str, Any]:
    """The reply to one command."""
    cmd = msg["cmd"]
    if cmd == "check" and msg["task"] == "train":
        return {"losses": [tasks["train"](), tasks["train"]()]}
    if cmd == "check":
        np.save(msg["path"], np.asarray(tasks[msg["task"]]()), allow_pickle=False)
        return {"ok": True}
    if cmd == "time":
        fn = tasks[msg["task"]]
        for _ in range(int(msg.get("warmup", 0))):
            fn()
        times, cpu = [], []
        for _ in range(int(msg["calls"])):
            t0, c0 = time.perf_counter(), time.thread_time()
            fn()
            cpu.append(time.thread_time() - c0)
            times.append(time.perf_counter() - t0)
        return {"times": times, "cpu": cpu}
    if cmd == "export":
        from _torch_twins import torch_onnx

        example = case.inputs(2, np.random.default_rng(3))
        msg_path = str(msg["path"])
        with open(msg_path, "wb") as f:
            f.write(torch_onnx(emodel, case.input_name, example).SerializeToString())
        return {"ok": True}
    raise ValueError(f"unknown command {cmd!r}")


def main() -> None:
    """Build, report the libraries loaded, then serve commands until ``quit`` or EOF."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--providers", default="cpu")
    parser.add_argument("--onnx", default=None)
    parser.add_argument("--spin", action="store_true")
    args = parser.parse_args()
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    case = make_case(args.model)
    tasks, emodel = build(args.kind, case, args)
    libs = sorted(m for m in ("torch", "onnxruntime") if m in sys.modules)
    proto.write(json.dumps({"ready": True, "libs": libs, "tasks": sorted(tasks)}) + "\n")
    proto.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        try:
            reply = answer(msg, case, tasks, emodel)
        except Exception as e:  # reported to the parent, which raises it there
            reply = {"error": f"{type(e).__name__}: {e}"}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


if __name__ == "__main__":
    main()
