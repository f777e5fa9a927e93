"""Contenders in processes of their own (``_contender.py``) and interleaved timing rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Contender", "rounds"]

HERE = Path(__file__).resolve().parent
# the library each kind may load; every other library named here must stay out of its process
OWN = {"ort": "onnxruntime", "torch_onnx_ort": "onnxruntime", "torch": "torch", "numpy": None}


def worker_env(threads: int, spin: bool) -> dict[str, str]:
    """The environment of a contender: thread counts for OpenMP/BLAS and, unless ``spin``,
    pools that sleep when idle (OpenMP passive waits, OpenBLAS's shortest spin)."""
    env = dict(os.environ)
    if threads:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(threads)
    if not spin:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        # OpenBLAS's pthreads busy-wait 2**28 cycles (~0.1 s) for work by default; 2**4 here
        env["OPENBLAS_THREAD_TIMEOUT"] = "4"
    return env


class Contender:
    """One library's side of one model, in a child process (see ``_contender.py``)."""

    def __init__(self, kind: str, model: str, threads: int, *, providers: str = "cpu",
                 spin: bool = False, onnx: str | None = None) -> None:
        cmd = [sys.executable, str(HERE / "_contender.py"), kind, model,
               "--threads", str(threads), "--providers", providers]
        cmd += ["--spin"] if spin else []
        cmd += ["--onnx", onnx] if onnx else []
        self.kind, self.model = kind, model
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=HERE, env=worker_env(threads, spin))
        hello = self._read()
        self.libs: list[str] = hello["libs"]
        self.tasks: list[str] = hello["tasks"]
        foreign = [lib for lib in ("torch", "onnxruntime") if lib in self.libs
                   and lib != OWN[kind]]
        if foreign:
            self.close()
            raise RuntimeError(f"contender {kind} ({model}) loaded {foreign}: one library per "
                               "process")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"contender {self.kind} ({self.model}) exited with status {code}"
                               " (its error is on stderr above)")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"contender {self.kind} ({self.model}): {reply['error']}")
        return reply

    def ask(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command and wait for its reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Ask the process to quit and wait for it."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=60)


def rounds(contenders: Mapping[str, Contender], task: str, repeat: int, calls: int,
           warmup: int = 3) -> dict[str, dict[str, float]]:
    """Interleaved rounds: in each round every contender runs ``calls`` timed calls of ``task``
    in turn (the first of the round rotates), while the others wait blocked on their pipe.
    A round's figure is the median of its calls; per contender: the median and min over the
    rounds, the spread (interquartile range / median) and the median of the calling thread's
    CPU time (``cpu_median``), in seconds."""
    names: Sequence[str] = list(contenders)
    for k in names:
        contenders[k].ask("time", task=task, calls=0, warmup=warmup)
    per: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeat):
        for i in range(len(names)):
            k = names[(r + i) % len(names)]
            reply = contenders[k].ask("time", task=task, calls=calls)
            per[k].append(float(np.median(reply["times"])))
            cpu[k].append(float(np.median(reply["cpu"])))
    out: dict[str, dict[str, float]] = {}
    for k, v in per.items():
        q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
        out[k] = {"median": med, "min": float(np.min(v)), "spread": (q3 - q1) / med,
                  "cpu_median": float(np.median(cpu[k]))}
    return out
