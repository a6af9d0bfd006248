"""Shot-parallel gradients over ``torch.distributed`` ranks (``torchrun``).

``torchrun --nproc-per-node N -m fwi_cli invert|sweep CONFIG ...`` starts N processes
(ranks) with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set. :func:`init_from_env` turns that environment into a :class:`DistContext`: a process
group with backend NCCL on GPUs (rank r computes on ``cuda:LOCAL_RANK``) or gloo on CPU.
Without ``WORLD_SIZE > 1`` it returns None and fwi runs as one process.

Every rank draws the same shot batch ``idx`` (B shots) from the same seeded generator and
takes a contiguous share of it (:func:`split_shots`: the first ``B mod N`` ranks take one
shot more). With residuals ``r = d_pred - d_obs`` over the (shot, time, receiver) elements
of the batch, ``M = B * nt * nrec`` of them, rank k computes

    L_k = sum_{s in share_k} sum_{t, j} r[s, t, j]^2 / M ,      g_k = dL_k / dvp ,

and one all-reduce (sum) of ``[g_k, L_k, failed_k]`` gives every rank

    L = sum_k L_k = mean(r^2) over the whole batch,     g = sum_k g_k = dL / dvp ,

the single-process loss and gradient up to the order of fp32 additions. Every rank then
takes the same Adam step, so the models stay identical on all ranks without being sent.

Failures are agreed on: a rank whose propagator raises a
:class:`~fwi_cli.errors.FwiError` or runs out of memory joins the all-reduce with
``failed_k = 1``; then every rank stops at that iteration (the rank that failed re-raises
its own error, the others raise :class:`PeerRankError` naming it), so the job ends
``failed`` on every rank and no rank waits forever in a collective.

Only rank 0 (the *writer*) writes stores, holds the run-directory lock and reports
progress; :meth:`DistContext.on_writer` runs a function on rank 0 alone and hands its
result, or its failure, to every rank (which also makes it a barrier).

NVLink multicast (NVLS) is left as the machine sets it: when ``NCCL_NVLS_ENABLE`` is unset
it is set to ``0`` before NCCL starts (it is never set to 1 here).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist

from fwi_cli.errors import FwiArgumentError, FwiError
from fwi_cli.propagator.api import is_out_of_memory

DEFAULT_TIMEOUT_S = 3600.0  # rank 0 may model the observed data alone while the others wait
TIMEOUT_ENV = "FWI_DIST_TIMEOUT_S"
NVLS_ENV = "NCCL_NVLS_ENABLE"


class PeerRankError(FwiError):
    """Another rank of the process group failed; the message names it and its error.

    The command line prints nothing for it (``reported_elsewhere``): the failing rank
    reports the cause itself.
    """

    reported_elsewhere = True


@dataclass
class DistContext:
    """This process's place in a ``torch.distributed`` process group.

    Attributes:
        rank: global rank (0 writes stores and reports progress).
        world_size: number of ranks.
        local_rank: rank on this host (picks the GPU).
        device: compute device: ``cuda:LOCAL_RANK`` with CUDA, else cpu.
        backend: "nccl" or "gloo".
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_writer(self) -> bool:
        """True on rank 0, the only rank that writes stores and reports progress."""
        return self.rank == 0

    def describe(self) -> dict:
        """``{"world_size", "backend"}`` for a store's ``distributed`` attribute."""
        return {"world_size": self.world_size, "backend": self.backend}

    # ------------------------------------------------------------------ rank-0 work
    def on_writer(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on rank 0 only and return its result on every rank.

        A collective: every rank must call it, in the same order. The result must pickle.

        Raises:
            Exception: on rank 0, whatever ``fn`` raised (after telling the other ranks).
            PeerRankError: on the other ranks, when ``fn`` failed on rank 0.
        """
        box: list[Any] = [None]
        if self.is_writer:
            try:
                box[0] = ("ok", fn(*args, **kwargs))
            except Exception as exc:
                tdist.broadcast_object_list([("error", _describe(exc))], src=0)
                raise
        tdist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise PeerRankError(f"rank 0 failed: {value}")
        return value

    # ------------------------------------------------------------------ gradient
    def loss_and_grad(
        self,
        solver,
        problem,
        vp: torch.Tensor,  # (nz, nx) float32, requires_grad, identical on every rank
        idx: np.ndarray,  # (B,) int64 shot indices of the whole batch
        observed: torch.Tensor,  # (nshots, nt, nrec, 1) float32 on this rank's device
    ) -> float:
        """Loss of the whole batch, with ``vp.grad`` set to its gradient on every rank.

        This rank models only its share of ``idx`` (see :func:`split_shots`); one
        all-reduce sums the shares (module docstring).

        Returns:
            The batch loss ``mean((d_pred - d_obs)^2)`` (possibly non-finite).

        Raises:
            FwiError / out-of-memory RuntimeError: this rank's own failure, after the others
                were told.
            PeerRankError: another rank failed at this iteration.
        """
        mine = split_shots(idx, self.rank, self.world_size)
        count = len(idx) * int(np.prod(observed.shape[1:]))  # M = B * nt * nrec
        part = torch.zeros((), dtype=vp.dtype, device=vp.device)
        error: BaseException | None = None
        try:
            if len(mine):
                sel = torch.from_numpy(mine).to(observed.device)  # before the forward: it syncs
                rec = solver(problem.wavelet, problem.sources[mine], problem.receivers[mine],
                             models=[vp])
                value = (rec - observed[sel]).pow(2).sum() / count
                rec = None
                value.backward()
                part = value.detach()
        except FwiError as exc:
            error = exc
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            error = exc
        grad = vp.grad.detach().reshape(-1) if vp.grad is not None and error is None \
            else torch.zeros(vp.numel(), dtype=vp.dtype, device=vp.device)
        flag = torch.ones(1, dtype=vp.dtype, device=vp.device) if error is not None \
            else torch.zeros(1, dtype=vp.dtype, device=vp.device)
        buf = torch.cat([grad, part.reshape(1), flag])  # (nz*nx + 2,)
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
        if float(buf[-1]) > 0:
            self._raise_agreed_failure(error)
        vp.grad = buf[: vp.numel()].reshape(vp.shape).clone()
        return float(buf[-2])

    def _raise_agreed_failure(self, error: BaseException | None) -> None:
        notes: list[Any] = [None] * self.world_size
        tdist.all_gather_object(notes, None if error is None else _describe(error))
        if error is not None:
            raise error
        first = next(r for r, n in enumerate(notes) if n is not None)
        raise PeerRankError(f"rank {first} of {self.world_size} failed: {notes[first]}")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


def split_shots(idx: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous share of a shot batch.

    Args:
        idx: (B,) shot indices, identical on every rank.
        rank, world_size: this rank and the number of ranks.

    Returns:
        (B_k,) the shots of rank ``rank``: shares differ by at most one shot, the larger
        ones first, and their concatenation in rank order is ``idx``.
    """
    if not 0 <= rank < world_size:
        raise FwiArgumentError(f"rank must lie in [0, {world_size}), got {rank}")
    base, extra = divmod(len(idx), world_size)
    start = rank * base + min(rank, extra)
    return np.asarray(idx[start : start + base + (1 if rank < extra else 0)])


def check_batch(batch_shots: int, ctx: DistContext | None, where: str = "<config>") -> None:
    """Every rank needs at least one shot per iteration.

    Raises:
        FwiArgumentError: ``batch_shots`` is smaller than the number of ranks.
    """
    if ctx is not None and batch_shots < ctx.world_size:
        raise FwiArgumentError(
            f"{where}: inversion.batch_shots = {batch_shots} is smaller than the number of "
            f"processes ({ctx.world_size}): every rank needs at least one shot; start at most "
            f"{batch_shots} processes or raise inversion.batch_shots"
        )


def _int_env(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except KeyError:
        raise FwiArgumentError(f"WORLD_SIZE is set but {key} is not: start distributed runs "
                               "with `torchrun --nproc-per-node N -m fwi_cli ...`") from None
    except ValueError:
        raise FwiArgumentError(f"environment variable {key}={env[key]!r} is not an "
                               "integer") from None


def init_from_env(env: Mapping[str, str] | None = None) -> DistContext | None:
    """Join the process group ``torchrun`` describes in the environment.

    Args:
        env: the environment (``os.environ`` by default).

    Returns:
        None when ``WORLD_SIZE`` is unset or 1 (a single process); else the
        :class:`DistContext`, with the process group initialised (or reused, when
        already initialised) and destroyed at exit.

    Raises:
        FwiArgumentError: the torchrun variables are incomplete or not integers, or
            ``LOCAL_RANK`` names a GPU that does not exist.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env or _int_env(env, "WORLD_SIZE") <= 1:
        return None
    world, rank, local = (_int_env(env, k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        if local >= n:
            raise FwiArgumentError(f"LOCAL_RANK {local} but only {n} CUDA device(s) exist: "
                                   f"use torchrun --nproc-per-node {n} or fewer")
        os.environ.setdefault(NVLS_ENV, "0")  # never enable NVLink multicast
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not tdist.is_initialized():
        timeout = timedelta(seconds=float(env.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        kwargs = {"device_id": device} if backend == "nccl" else {}
        tdist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout, **kwargs)
        atexit.register(shutdown)
    return DistContext(rank, world, local, device, backend)


def shutdown() -> None:
    """Destroy the process group if one is initialised (safe to call twice)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()

