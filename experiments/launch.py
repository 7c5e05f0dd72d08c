"""Where an experiment's trials run: `--launcher inline|local|slurm` (README: Running at scale).

- `inline` (default): this process trains every trial, then writes the report.
- `local --jobs N`: N worker processes on this host, each with its share of the CPU threads
  (at most OMP_NUM_THREADS where that is set) or its own GPU through CUDA_VISIBLE_DEVICES, logs
  in runs/[smoke/]<name>/local/.
- `slurm --jobs N`: one submitit job array of N workers, logs in runs/[smoke/]<name>/slurm/;
  a pre-empted or timed-out job is requeued by submitit and resumes from its checkpoints.

A worker is the same experiment command with `--worker k/N`: it walks the same grid and trains
the trials it can claim (`lib.runs.Claim`, used by `experiments.trial` and
`experiments.packing`), waiting for the ones it needs that others train. When the workers are
done, the launching process writes the report from the finished trials without training
(as `--report-only` does). Nothing here imports submitit unless `--launcher slurm` is asked for.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from lib.runs import runs_root

LAUNCHERS = ("inline", "local", "slurm")
SLURM = ("partition", "time", "gpus_per_task", "cpus_per_task", "array_parallelism")
# options of the launching process only: a worker's command line is the rest
VALUED = ["--launcher", "--jobs", "--worker", *(f"--slurm-{f.replace('_', '-')}" for f in SLURM)]
FLAGS = ["--report-only", "--wandb-artifacts"]


def add_launch_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where trials run (README: Running at scale)")
    g.add_argument("--launcher", default="inline",
                   help="inline (default: this process), local (--jobs worker processes on this "
                        "host) or slurm (a submitit job array of --jobs workers)")
    g.add_argument("--jobs", type=int, default=None, help="workers for local / slurm (default 2)")
    g.add_argument("--report-only", action="store_true",
                   help="write the tables and plots from finished trials; train nothing")
    g.add_argument("--slurm-partition", default=None, help="SLURM partition")
    g.add_argument("--slurm-time", type=int, default=None, help="minutes per job (default 240)")
    g.add_argument("--slurm-gpus-per-task", type=int, default=None, help="GPUs per job")
    g.add_argument("--slurm-cpus-per-task", type=int, default=None, help="CPUs per job")
    g.add_argument("--slurm-array-parallelism", type=int, default=None,
                   help="jobs of the array running at once")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "k/N", set by launchers


def check_launch(a: argparse.Namespace) -> None:
    """One-line ValueError for launcher flags that cannot work, before anything is written."""
    if a.launcher not in LAUNCHERS:
        raise ValueError(f"launcher: unknown '{a.launcher}', choose from {', '.join(LAUNCHERS)}")
    if a.worker is not None:
        worker_of(a.worker)
        return
    if a.jobs is not None and a.jobs < 1:
        raise ValueError(f"jobs: must be >= 1, got {a.jobs}")
    if a.jobs is not None and a.launcher == "inline":
        raise ValueError("jobs: needs --launcher local or slurm")
    for f in SLURM:
        value = getattr(a, f"slurm_{f}")
        if value is not None and a.launcher != "slurm":
            raise ValueError(f"slurm_{f}: needs --launcher slurm")
        if value is not None and f != "partition" and value < 1:
            raise ValueError(f"slurm_{f}: must be >= 1, got {value}")
    if a.report_only and a.launcher != "inline":
        raise ValueError("report_only: trains nothing, so it takes no --launcher")
    if a.launcher == "slurm" and not local_cluster() and shutil.which("sbatch") is None:
        raise ValueError("launcher: slurm needs `sbatch` on PATH (not found here); run on the "
                         "cluster's login node, or use --launcher local")


def local_cluster() -> bool:
    """`LAB_SUBMITIT_CLUSTER=local`: slurm jobs run through submitit's LocalExecutor (tests)."""
    return os.environ.get("LAB_SUBMITIT_CLUSTER") == "local"


def worker_of(text: str) -> tuple[int, int]:
    """'k/N' -> (k, N)."""
    try:
        k, n = (int(x) for x in text.split("/"))
        assert 0 <= k < n
    except (ValueError, AssertionError):
        raise ValueError(f"worker: must be k/N with 0 <= k < N, got '{text}'") from None
    return k, n


def worker_argv(argv: Sequence[str], k: int, n: int) -> list[str]:
    """The experiment command of worker k of n: `argv` without the launching-only options."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUED:
            skip = True
        elif arg.split("=", 1)[0] not in VALUED + FLAGS:
            out.append(arg)
    return [*out, "--worker", f"{k}/{n}"]


def log_dir(name: str, scale: str, launcher: str) -> Path:
    return runs_root() / ("smoke" if scale == "smoke" else "") / name / launcher


def launch(name: str, scale: str, argv: Sequence[str], a: argparse.Namespace) -> None:
    """Run the workers of `a.launcher` and wait for them; a failed worker is one line (its
    trials are then missing from, or taken over before, the report)."""
    jobs = a.jobs or 2
    run = run_local if a.launcher == "local" else run_slurm
    failed = run(name, scale, list(argv), jobs, a)
    for line in failed:
        print(f"warning: {line}", file=sys.stderr, flush=True)


def run_local(name: str, scale: str, argv: list[str], jobs: int, a) -> list[str]:
    """`jobs` worker processes on this host; CPU threads shared out, one GPU each if any."""
    logs = log_dir(name, scale, "local")
    logs.mkdir(parents=True, exist_ok=True)
    gpus = visible_gpus()
    threads = str(worker_threads(jobs))
    procs = []
    for k in range(jobs):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]
        with open(logs / f"worker-{k}.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", f"experiments.{name}",
                                           *worker_argv(argv, k, jobs)], env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    where = f"one GPU each of {','.join(gpus)}" if gpus else f"{threads} threads each"
    print(f"local: {jobs} workers ({where}), logs in {logs}/", flush=True)
    try:
        codes = [p.wait() for p in procs]
    except BaseException:  # Ctrl-C / SIGTERM: stop the workers too (their claims are released)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    return [f"worker {k} exited with status {c}: see {logs}/worker-{k}.log"
            for k, c in enumerate(codes) if c != 0]


def worker_threads(jobs: int) -> int:
    """Each local worker's CPU threads: its share of the cores, capped by OMP_NUM_THREADS where
    the user set it (CPU sums are ordered by thread, so equal numbers need equal thread counts)."""
    share = max(1, (os.cpu_count() or 1) // jobs)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(cap)) if cap.isdigit() and int(cap) > 0 else share


def visible_gpus() -> list[str]:
    """The GPUs workers can be given: CUDA_VISIBLE_DEVICES's list, else every device torch sees."""
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


class Worker:
    """A submitit job: worker k of n of the experiment; requeued (same k) when pre-empted or
    out of time, so it resumes from the trials' checkpoints."""

    def __init__(self, name: str, argv: list[str], n: int, threads: int | None = None):
        self.name, self.argv, self.n, self.threads = name, argv, n, threads

    def __call__(self, k: int) -> int:
        if self.threads:  # its CPUs only: oversubscribed OpenMP threads spin (10x slower)
            import torch

            torch.set_num_threads(self.threads)
        experiment = importlib.import_module(f"experiments.{self.name}.__main__").EXPERIMENT
        experiment.main(worker_argv(self.argv, k, self.n))
        return k

    def checkpoint(self, k: int):
        import submitit

        return submitit.helpers.DelayedSubmission(self, k)  # resubmitted as it was


def run_slurm(name: str, scale: str, argv: list[str], jobs: int, a) -> list[str]:
    """One submitit job array of `jobs` workers; wait for them all."""
    import submitit

    folder = log_dir(name, scale, "slurm")
    executor = submitit.AutoExecutor(folder=folder,
                                     cluster="local" if local_cluster() else None)
    params = dict(timeout_min=a.slurm_time or 240, name=f"lab-{name}", stderr_to_stdout=True)
    if a.slurm_cpus_per_task:
        params["cpus_per_task"] = a.slurm_cpus_per_task
    params.update({f"slurm_{f}": getattr(a, f"slurm_{f}") for f in
                   ("partition", "gpus_per_task", "array_parallelism")
                   if getattr(a, f"slurm_{f}") is not None})
    executor.update_parameters(**params)
    array = executor.map_array(Worker(name, argv, jobs, a.slurm_cpus_per_task), range(jobs))
    print(f"slurm: job array {array[0].job_id.split('_')[0]} of {jobs} workers, logs in "
          f"{folder}/", flush=True)
    failed = []
    for k, job in enumerate(array):
        try:
            job.result()
        except Exception as e:  # noqa: BLE001 - a failed job costs its trials, not the report
            last = str(e).strip().splitlines()[-1:] or [type(e).__name__]
            failed.append(f"slurm job {job.job_id} (worker {k}) failed: {last[0][:160]}")
    return failed
