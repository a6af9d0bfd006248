"""The job matrix: blocks of ``impl x storage x dtype`` expanded into an ordered job list.

Each block's list values expand as a Cartesian product, in the order impl, storage, dtype
(the last varies fastest), and the blocks are concatenated in file order. So the DESIGN
matrix ::

    - {impl: c, storage: gpu, dtype: fp32}
    - {impl: c, storage: [gpu, cpu, disk], dtype: [fp16, bf16, int8]}
    - {impl: eager, storage: gpu, dtype: [fp32, fp16, bf16, int8]}

gives the seed's 13 jobs in the seed's order. A job is labelled ``c·gpu·int8`` and stored
under ``c-gpu-int8.zarr``. The same job twice is an error.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass

from fwi_cli.errors import ConfigError

SEP_LABEL = "·"
SEP_DIR = "-"


@dataclass(frozen=True)
class Job:
    """One inversion of the matrix: how the gradient is computed and where its ring lives."""

    impl: str
    storage: str
    dtype: str

    @property
    def label(self) -> str:
        """Display label, e.g. ``c·gpu·int8``."""
        return SEP_LABEL.join((self.impl, self.storage, self.dtype))

    @property
    def dirname(self) -> str:
        """File-system name, e.g. ``c-gpu-int8``."""
        return SEP_DIR.join((self.impl, self.storage, self.dtype))

    @property
    def store_name(self) -> str:
        """Name of the job's Zarr store, e.g. ``c-gpu-int8.zarr``."""
        return self.dirname + ".zarr"

    @classmethod
    def from_name(cls, name: str) -> Job:
        """Parse a label or directory name (``c·gpu·int8``, ``c-gpu-int8[.zarr]``)."""
        base = name[: -len(".zarr")] if name.endswith(".zarr") else name
        parts = base.split(SEP_LABEL) if SEP_LABEL in base else base.split(SEP_DIR)
        if len(parts) != 3:
            raise ValueError(f"not a job name: {name!r} (expected impl·storage·dtype)")
        return cls(*parts)


def _block_jobs(block) -> list[Job]:
    return [Job(i, s, d) for i, s, d in itertools.product(block.impl, block.storage, block.dtype)]


def duplicate_problems(blocks) -> list[str]:
    """Messages for jobs that appear more than once (``matrix.<k>: ...``), empty if none."""
    first: dict[Job, int] = {}
    bad = []
    for k, block in enumerate(blocks):
        seen_here: set[Job] = set()
        for job in _block_jobs(block):
            if job in seen_here:
                bad.append(f"matrix.{k}: job {job.label} is listed twice in this block")
            elif job in first:
                bad.append(f"matrix.{k}: job {job.label} duplicates one of matrix.{first[job]}")
            else:
                first[job] = k
            seen_here.add(job)
    return bad


def expand(blocks, where: str = "<config>") -> list[Job]:
    """Expand matrix blocks into the ordered list of jobs.

    Args:
        blocks: the config's ``matrix`` (objects with list attributes impl, storage, dtype).
        where: file name for messages.

    Raises:
        ConfigError: the matrix is empty or holds a job twice.
    """
    if not blocks:
        raise ConfigError(f"{where}: matrix: must hold at least one block")
    bad = duplicate_problems(blocks)
    if bad:
        raise ConfigError(f"{where}: " + "; ".join(bad))
    return [job for block in blocks for job in _block_jobs(block)]


def select(jobs: list[Job], pattern: str | None, where: str = "<config>") -> list[Job]:
    """Jobs whose label or directory name matches a shell glob (all jobs if ``pattern`` is None).

    Several globs may be given separated by commas. Matching ``c-gpu-*`` and ``c·gpu·*``
    are equivalent.

    Raises:
        ConfigError: no job matches.
    """
    if pattern is None:
        return list(jobs)
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    out = [
        j
        for j in jobs
        if any(fnmatch.fnmatchcase(j.label, g) or fnmatch.fnmatchcase(j.dirname, g) for g in globs)
    ]
    if not out:
        names = ", ".join(j.dirname for j in jobs)
        raise ConfigError(f"{where}: --only {pattern!r} matches no job (jobs: {names})")
    return out
