"""Codecs of the boundary ring: how one float32 ring step is stored.

A chunk of the ring is a (T, B, C) float32 tensor (T steps, B shots, C ring cells per shot).
A codec turns it into one or more *parts*, tensors whose leading dimension is the step, so a
store can slice any run of steps out of every part alike:

* ``fp32``: one part (T, B, C) float32; exact.
* ``fp16``: one part (T, B, C) float16; round to nearest, values beyond the fp16 range
  (|x| > 65504) saturate to +-65504 instead of becoming infinite. Relative error
  <= 2^-11 for normal numbers.
* ``bf16``: one part (T, B, C) bfloat16; round to nearest, relative error <= 2^-8.
* ``int8``: codes (T, B, C) int8 and scales (T, B, ceil(C/256)) float32. Each (step, shot)
  row is cut into blocks of 256 consecutive cells (the last block of the row is shorter
  when C is not a multiple of 256, i.e. padded with nothing). For a block with absolute
  maximum ``a``::

      scale = a / 127,   code = clamp(round(x / scale), -127, 127),   x' = code * scale

  so ``|x - x'| <= a / 254`` (plus fp32 rounding of the scale), and an all-zero block has
  scale 0 and decodes to exact zeros. 1 byte per cell plus 4 bytes per 256 cells,
  ≈3.94x smaller than fp32.

Every encode and decode is a handful of vectorised torch ops on the compute device; no
Python loop runs over cells or steps.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F

from fwi_cli.errors import FwiArgumentError

#: Consecutive ring cells of one (step, shot) row that share one int8 scale.
INT8_BLOCK = 256

#: Largest finite float16 value; fp16 encoding saturates there.
_FP16_MAX = 65504.0


class Codec(abc.ABC):
    """How a (T, B, C) float32 ring chunk is stored.

    Attributes:
        name: the ``storage_dtype`` name ("fp32", "fp16", "bf16", "int8").
    """

    name: str = ""

    @abc.abstractmethod
    def part_specs(self, batch: int, cells: int) -> list[tuple[torch.dtype, tuple[int, ...]]]:
        """(dtype, per-step shape) of every part of one stored step."""

    def row_nbytes(self, cells: int) -> int:
        """Bytes one (step, shot) row of ``cells`` ring cells occupies (all parts)."""
        return sum(
            torch.empty((), dtype=dt).element_size() * _prod(shape)
            for dt, shape in self.part_specs(1, cells)
        )

    def allocate(
        self, steps: int, batch: int, cells: int, device: torch.device, pin_memory: bool = False
    ) -> list[torch.Tensor]:
        """Uninitialised parts for ``steps`` steps: each (steps, *per-step shape)."""
        return [
            torch.empty((steps, *shape), dtype=dt, device=device, pin_memory=pin_memory)
            for dt, shape in self.part_specs(batch, cells)
        ]

    @abc.abstractmethod
    def encode(self, x: torch.Tensor, out: list[torch.Tensor]) -> None:
        """Encode ``x`` (T, B, C) float32 into ``out`` (parts with leading dim T), in place."""

    @abc.abstractmethod
    def decode(self, parts: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        """Decode parts (leading dim T) into (T, B, C) float32.

        Args:
            parts: the stored parts of T steps, on the device where decoding runs.
            out: (T, B, C) float32 to write into; None allocates one (the fp32 codec then
                returns ``parts[0]`` itself, without a copy).
        """


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class Fp32Codec(Codec):
    """Exact storage: the part is the chunk itself."""

    name = "fp32"

    def part_specs(self, batch, cells):
        return [(torch.float32, (batch, cells))]

    def encode(self, x, out):
        out[0].copy_(x)

    def decode(self, parts, out=None):
        if out is None:
            return parts[0]
        return out.copy_(parts[0])


class _HalfCodec(Codec):
    """Two bytes per cell (float16 or bfloat16), round to nearest."""

    dtype: torch.dtype = torch.float16
    saturate: float | None = None

    def part_specs(self, batch, cells):
        return [(self.dtype, (batch, cells))]

    def encode(self, x, out):
        if self.saturate is not None:
            x = x.clamp(-self.saturate, self.saturate)
        out[0].copy_(x)

    def decode(self, parts, out=None):
        if out is None:
            return parts[0].to(torch.float32)
        return out.copy_(parts[0])


class Fp16Codec(_HalfCodec):
    """float16; saturates at +-65504."""

    name = "fp16"
    dtype = torch.float16
    saturate = _FP16_MAX


class Bf16Codec(_HalfCodec):
    """bfloat16 (fp32 range, 8-bit significand)."""

    name = "bf16"
    dtype = torch.bfloat16


class Int8Codec(Codec):
    """int8 codes with one fp32 absmax scale per block of 256 cells of a (step, shot) row."""

    name = "int8"
    block = INT8_BLOCK

    def n_blocks(self, cells: int) -> int:
        """Scales per (step, shot) row: ceil(cells / 256)."""
        return -(-cells // self.block)

    def part_specs(self, batch, cells):
        return [(torch.int8, (batch, cells)), (torch.float32, (batch, self.n_blocks(cells)))]

    def encode(self, x, out):
        codes, scales = out  # (T, B, C) int8, (T, B, nblk) float32
        t, b, c = x.shape
        nblk = scales.shape[-1]
        if nblk == 0:
            return
        width = nblk * self.block
        xp = x if width == c else F.pad(x, (0, width - c))  # zero-pad the last block
        xb = xp.view(t, b, nblk, self.block)
        absmax = torch.linalg.vector_norm(xb, ord=float("inf"), dim=-1)  # (T, B, nblk)
        torch.div(absmax, 127.0, out=scales)
        safe = torch.where(scales > 0, scales, 1.0)  # all-zero block: codes 0 whatever
        q = torch.div(xb, safe.unsqueeze(-1)).round_().clamp_(-127.0, 127.0)
        codes.copy_(q.view(t, b, width)[..., :c])

    def decode(self, parts, out=None):
        codes, scales = parts
        t, b, c = codes.shape
        if out is None:
            out = torch.empty((t, b, c), dtype=torch.float32, device=codes.device)
        nfull = c // self.block
        cut = nfull * self.block
        if nfull:
            ov = out[..., :cut].view(t, b, nfull, self.block)
            torch.mul(codes[..., :cut].view(t, b, nfull, self.block), scales[..., :nfull, None], out=ov)
        if cut < c:
            torch.mul(codes[..., cut:], scales[..., nfull:], out=out[..., cut:])
        return out


CODECS: dict[str, Codec] = {c.name: c for c in (Fp32Codec(), Fp16Codec(), Bf16Codec(), Int8Codec())}


def get_codec(storage_dtype: str) -> Codec:
    """The codec of a ``storage_dtype`` name.

    Raises:
        FwiArgumentError: unknown name (the message lists the valid ones).
    """
    try:
        return CODECS[storage_dtype]
    except (KeyError, TypeError):
        raise FwiArgumentError(
            f"storage_dtype must be one of {tuple(CODECS)}, got {storage_dtype!r}"
        ) from None


def ring_nbytes(nt: int, batch: int, cells: int, dtype: str) -> int:
    """Bytes of a whole stored ring: ``nt * batch * row_bytes``.

    ``row_bytes`` is 4C (fp32), 2C (fp16, bf16) or C + 4 ceil(C/256) (int8) for C cells.
    """
    return nt * batch * get_codec(dtype).row_nbytes(cells)
