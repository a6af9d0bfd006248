"""Codecs of the boundary ring: how one float32 ring step is stored.

A chunk of the ring is a (T, B, C) float32 tensor (T steps, B shots, C ring cells per shot).
A codec turns it into one or more *parts*, tensors whose leading dimension is the step, so a
store can slice any run of steps out of every part alike:

* ``fp32``: one part (T, B, C) float32; exact.
* ``bf16``: one part (T, B, C) bfloat16; round to nearest, relative error <= 2^-8 (bf16 has
  fp32's exponent range, so no scaling is needed).
* ``fp16`` and ``int8`` are *block* codecs: each (step, shot) row is cut into blocks of
  ``INT8_BLOCK`` = 256 consecutive cells (the last block of the row is shorter when C is
  not a multiple of 256), and every block stores one side value next to its codes.
  Let ``a`` be a block's absolute maximum.

``int8``: codes (T, B, C) int8 and scales (T, B, ceil(C/256)) float32::

    scale = a / 127,   code = clamp(round(x / scale), -127, 127),   x' = code * scale

so ``|x - x'| <= a / 254`` (plus fp32 rounding of the scale), and an all-zero block has
scale 0 and decodes to exact zeros. 1 byte per cell plus 4 bytes per 256 cells,
≈3.94x smaller than fp32.

``fp16``: codes (T, B, C) float16 and exponents (T, B, ceil(C/256)) int8. With
``k = floor(log2 a)`` (taken exactly from ``torch.frexp``, never from a float log2)::

    e = clamp(k - 14, -126, 126),   code = fp16(x * 2^-e),   x' = fp32(code) * 2^e

so the block's largest value is stored in [2^14, 2^15): nothing saturates, whatever the
source amplitude (the wavefield scales with it), and a global power-of-two rescaling of the
input leaves the codes unchanged and rescales the output exactly. 2^e and 2^-e are built
from their bit patterns (exact normal fp32 numbers for e in [-126, 126]). 2 bytes per cell
plus 1 byte per 256 cells, ≈1.99x smaller than fp32. Error bound, for a block with
``2^-111 <= a < 2^128`` (then ``e = k - 14 >= -125`` is not clamped and 2^e lies in
(a 2^-15, a 2^-14]): multiplying by 2^-e is exact (or the result is below 2^-126, where fp16
rounds it to 0 anyway), ``|x 2^-e| < 2^15`` never overflows fp16, and ``code * 2^e`` is exact
in fp32 (code has 11 significant bits, none below 2^-24), so the only rounding is fp16's::

    |x - x'| <= 2^-11 |x|   if |x| >= 2^(e-14)   (fp16 normal; holds for all |x| >= a 2^-28)
    |x - x'| <= 2^(e-25)    otherwise            (half the fp16 subnormal step; <= a 2^-39)

For ``a < 2^-111`` (≈3.9e-34) the same holds up to fp32's own subnormal spacing 2^-149.
An all-zero block stores e = 0 and decodes to exact zeros. A block whose ``a`` is NaN or
±Inf (it holds a NaN or an infinity) stores e = 0, i.e. plain fp16: NaN and ±Inf cells
decode as themselves and finite cells beyond ±65504 of that block become ±Inf, so a
non-finite value never comes back finite; other blocks are unaffected.

Every encode and decode is a handful of vectorised torch ops on the compute device; no
Python loop runs over cells or steps. When the compiled kernels make the ring store
(``impl="c"``), int8 and fp16 code in one fused kernel each way instead
(:class:`FusedInt8Codec`, :class:`FusedFp16Codec`). Block codecs encode the zero-padded chunk in one pass
and decode straight into ``out`` in at most two runs (the full blocks, then the shorter
last one), which needs the cell dimension of parts and ``out`` contiguous, as every
store's are.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F

from fwi_cli.errors import FwiArgumentError

#: Consecutive ring cells of one (step, shot) row that share one side value (int8 scale,
#: fp16 exponent).
INT8_BLOCK = 256

#: Exponent range of the fp16 block scale: 2^e and 2^-e are both normal fp32 numbers.
_FP16_EXP_MAX = 126

#: The fp16 code of a block's absolute maximum lies in [2^_FP16_TOP, 2^(_FP16_TOP + 1)).
_FP16_TOP = 14


class Codec(abc.ABC):
    """How a (T, B, C) float32 ring chunk is stored.

    Attributes:
        name: the ``storage_dtype`` name ("fp32", "fp16", "bf16", "int8").
    """

    name: str = ""
    #: the staged tiers code a whole chunk (or gathered range) at once and move its codes to and
    #: from the tier in runs of whole blocks, one copy per part: far fewer host-side calls than
    #: coding block by block through the staging slots. Every codec but fp32, whose "codes" would
    #: be a second copy of the chunk on the device.
    whole_chunks: bool = False

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


class Bf16Codec(Codec):
    """bfloat16 (fp32 range, 8-bit significand), round to nearest."""

    name = "bf16"
    whole_chunks = True  # run X5: cpu·bf16 0.093 s against 0.074 for fp16, which coded whole chunks

    def part_specs(self, batch, cells):
        return [(torch.bfloat16, (batch, cells))]

    def encode(self, x, out):
        out[0].copy_(x)

    def decode(self, parts, out=None):
        if out is None:
            return parts[0].to(torch.float32)
        return out.copy_(parts[0])


def _padded_blocks(x: torch.Tensor, nblk: int, block: int) -> torch.Tensor:
    """``x`` (T, B, C) zero-padded to ``nblk * block`` cells, seen as (T, B, nblk, block).

    The padding zeros change no block's absolute maximum and are cut off after coding.
    """
    width = nblk * block
    xp = x if width == x.shape[-1] else F.pad(x, (0, width - x.shape[-1]))
    return xp.reshape(*x.shape[:-1], nblk, block)


def _block_runs(cells: int, block: int) -> list[tuple[slice, slice, int]]:
    """Runs of equal-width blocks covering a row: (cell slice, block slice, width).

    At most two: the ``cells // block`` full blocks, then the shorter last block.
    """
    nfull, rem = divmod(cells, block)
    runs = []
    if nfull:
        runs.append((slice(0, nfull * block), slice(0, nfull), block))
    if rem:
        runs.append((slice(nfull * block, cells), slice(nfull, nfull + 1), rem))
    return runs


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """2^e as float32, exact, built from the bit pattern; e integer in [-126, 127]."""
    return ((e.to(torch.int32) + 127) << 23).view(torch.float32)


class _BlockCodec(Codec):
    """Codes (T, B, C) plus one side value per block of 256 cells of a (step, shot) row.

    Encoding codes the zero-padded chunk in one pass (one set of kernels whatever C);
    decoding writes into ``out`` directly, one run of equal-width blocks at a time.
    Subclasses set the two dtypes and the per-block arithmetic.
    """

    block = INT8_BLOCK
    whole_chunks = True
    code_dtype: torch.dtype = torch.int8
    side_dtype: torch.dtype = torch.float32

    def n_blocks(self, cells: int) -> int:
        """Side values per (step, shot) row: ceil(cells / 256)."""
        return -(-cells // self.block)

    def part_specs(self, batch, cells):
        return [(self.code_dtype, (batch, cells)), (self.side_dtype, (batch, self.n_blocks(cells)))]

    def encode(self, x, out):
        codes, side = out  # (T, B, C), (T, B, nblk)
        t, b, c = x.shape
        nblk = side.shape[-1]
        if nblk == 0:
            return
        q = self._encode_blocks(_padded_blocks(x, nblk, self.block), side)  # (T, B, nblk, 256)
        codes.copy_(q.view(t, b, nblk * self.block)[..., :c])  # the cast to code_dtype

    def decode(self, parts, out=None):
        codes, side = parts  # (T, B, C), (T, B, nblk)
        if out is None:
            out = torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
        for cells, blocks, width in _block_runs(codes.shape[-1], self.block):
            n = blocks.stop - blocks.start
            shape = (*codes.shape[:-1], n, width)  # (T, B, n, width): views, so out is written
            torch.mul(
                codes[..., cells].view(shape),
                self._decode_factor(side[..., blocks]).unsqueeze(-1),
                out=out[..., cells].view(shape),
            )
        return out

    @abc.abstractmethod
    def _encode_blocks(self, xb: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        """Fill ``side`` (T, B, n) for ``xb`` (T, B, n, 256) float32; return the float32
        values whose cast to ``code_dtype`` are the codes (T, B, n, 256)."""

    @abc.abstractmethod
    def _decode_factor(self, side: torch.Tensor) -> torch.Tensor:
        """(T, B, n) float32 factor a block's codes are multiplied by."""


class Fp16Codec(_BlockCodec):
    """float16 codes with one power-of-two int8 exponent per block of 256 cells."""

    name = "fp16"
    code_dtype = torch.float16
    side_dtype = torch.int8

    def _encode_blocks(self, xb, side):
        absmax = torch.linalg.vector_norm(xb, ord=float("inf"), dim=-1)  # (T, B, n)
        k = torch.frexp(absmax).exponent - 1  # absmax = m 2^(k+1), m in [0.5, 1): k = floor(log2)
        e = (k - _FP16_TOP).clamp_(-_FP16_EXP_MAX, _FP16_EXP_MAX)
        e = torch.where(torch.isfinite(absmax) & (absmax > 0), e, 0)  # zero / non-finite: e = 0
        side.copy_(e)
        return xb * _pow2(-e).unsqueeze(-1)  # exact; the cast to fp16 is the one rounding

    def _decode_factor(self, side):
        return _pow2(side)  # code * 2^e is exact unless below 2^-126


class Int8Codec(_BlockCodec):
    """int8 codes with one fp32 absmax scale per block of 256 cells of a (step, shot) row."""

    name = "int8"
    code_dtype = torch.int8
    side_dtype = torch.float32

    def _encode_blocks(self, xb, side):
        absmax = torch.linalg.vector_norm(xb, ord=float("inf"), dim=-1)  # (T, B, n)
        torch.div(absmax, 127.0, out=side)
        safe = torch.where(side > 0, side, 1.0)  # all-zero block: codes 0 whatever
        return torch.div(xb, safe.unsqueeze(-1)).round_().clamp_(-127.0, 127.0)

    def _decode_factor(self, side):
        return side


class _FusedCodec:
    """Mixin: encode / decode through two ops of the compiled kernels (``ENCODE``, ``DECODE``,
    taking (values, codes, side) and (codes, side, out)), one kernel each way per call."""

    ENCODE = DECODE = ""

    def __init__(self, kernels) -> None:
        self.kernels = kernels

    def encode(self, x, out):
        codes, side = out  # (T, B, C) codes, (T, B, nblk) block values
        getattr(self.kernels, self.ENCODE)(x.contiguous(), codes, side)

    def decode(self, parts, out=None):
        codes, side = parts
        if out is None:
            out = torch.empty(codes.shape, dtype=torch.float32, device=codes.device)
        getattr(self.kernels, self.DECODE)(codes, side, out)
        return out


class FusedInt8Codec(_FusedCodec, Int8Codec):
    """:class:`Int8Codec` in one kernel each way: ``fwi::ring_encode_int8`` /
    ``fwi::ring_decode_int8`` of the compiled kernels (``kernels/fwi_codec*.{cpp,cu}``).
    Replaces ~10 torch kernels per chunk.

    Same scales up to their last bit (absmax / 127 is a true division there, a multiplication
    by 1/127 in torch on CUDA), hence the same codes but for a rare one-step difference where
    that bit moves a rounding. A block holding a NaN or an infinity gets a NaN scale and
    decodes to NaN, as the torch codec's does.

    Args:
        kernels: ``torch.ops.fwi`` once loaded (``fwi_cli.propagator.backend.load``).
    """

    ENCODE, DECODE = "ring_encode_int8", "ring_decode_int8"


class FusedFp16Codec(_FusedCodec, Fp16Codec):
    """:class:`Fp16Codec` in one kernel each way: ``fwi::ring_encode_fp16`` /
    ``fwi::ring_decode_fp16`` of the compiled kernels, the same codes and exponents bit for bit.

    Args:
        kernels: ``torch.ops.fwi`` once loaded (``fwi_cli.propagator.backend.load``).
    """

    ENCODE, DECODE = "ring_encode_fp16", "ring_decode_fp16"


CODECS: dict[str, Codec] = {c.name: c for c in (Fp32Codec(), Fp16Codec(), Bf16Codec(), Int8Codec())}
FUSED = {"int8": FusedInt8Codec, "fp16": FusedFp16Codec}  # codecs the compiled kernels run


def get_codec(storage_dtype: str, kernels=None) -> Codec:
    """The codec of a ``storage_dtype`` name.

    Args:
        storage_dtype: "fp32", "fp16", "bf16" or "int8".
        kernels: the loaded compiled ops (``torch.ops.fwi``), or None: with them, int8 and
            fp16 code in fused kernels (:class:`FusedInt8Codec`, :class:`FusedFp16Codec`).

    Raises:
        FwiArgumentError: unknown name (the message lists the valid ones).
    """
    try:
        codec = CODECS[storage_dtype]
    except (KeyError, TypeError):
        raise FwiArgumentError(
            f"storage_dtype must be one of {tuple(CODECS)}, got {storage_dtype!r}"
        ) from None
    if kernels is not None and codec.name in FUSED:
        return FUSED[codec.name](kernels)
    return codec


def ring_nbytes(nt: int, batch: int, cells: int, dtype: str) -> int:
    """Bytes of a whole stored ring: ``nt * batch * row_bytes``.

    ``row_bytes`` is 4C (fp32), 2C + ceil(C/256) (fp16), 2C (bf16) or C + 4 ceil(C/256)
    (int8) for C cells.
    """
    return nt * batch * get_codec(dtype).row_nbytes(cells)
