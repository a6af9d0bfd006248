"""Codecs of the boundary ring: exactness, error bounds, layout and byte counts."""

from __future__ import annotations

import math

import pytest
import torch

from fwi_cli.errors import FwiArgumentError
from fwi_cli.storage import CODECS, INT8_BLOCK, get_codec, ring_nbytes

CPU = torch.device("cpu")
# fp32 rounding of the int8 scale a/127 and of the decoded product code*scale: each is
# one rounding of relative size <= 2^-24, so the a/254 bound holds up to a few ulp of a.
_ULP_SLACK = 4 * 2.0**-24


def _roundtrip(name: str, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    codec = get_codec(name)
    t, b, c = x.shape
    parts = codec.allocate(t, b, c, CPU)
    codec.encode(x, parts)
    return codec.decode(parts), parts


def _log_uniform(shape, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """Random magnitudes spread evenly in log between lo and hi, random signs."""
    e = torch.rand(shape, generator=gen, dtype=torch.float64) * (math.log(hi) - math.log(lo))
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).double()
    return (sign * torch.exp(e + math.log(lo))).float()


def test_fp32_codec_roundtrip_is_exact():
    gen = torch.Generator().manual_seed(1)
    x = _log_uniform((5, 3, 301), 1e-38, 1e38, gen)
    x[0, 0, :4] = torch.tensor([0.0, -0.0, float("inf"), 1e-45])
    y, _ = _roundtrip("fp32", x)
    assert torch.equal(y, x)


def _fp16_assert_block_bound(x: torch.Tensor, y: torch.Tensor, exps: torch.Tensor) -> None:
    """The fp16 codec's exponent and error bound per block, checked in float64.

    For a block with absmax a > 0: 2^14 <= a 2^-e < 2^15, and for every value
    |x - x'| <= 2^-11 |x| when |x| >= 2^(e-14), else |x - x'| <= 2^(e-25); hence relative
    2^-11 for all |x| >= a 2^-28 and absolute a 2^-39 below that. An all-zero block has e = 0.
    """
    for k, sl in _int8_blocks(x):
        xb, yb = x[..., sl].double(), y[..., sl].double()  # (T, B, w)
        a = xb.abs().amax(-1, keepdim=True)  # (T, B, 1)
        e = exps[..., k : k + 1].double()  # (T, B, 1)
        top = torch.ldexp(a, -e)
        assert torch.all((a == 0) | ((top >= 2.0**14) & (top < 2.0**15))), f"block {k}"
        assert torch.all(e[a == 0] == 0), f"block {k}"
        err, mag = (yb - xb).abs(), xb.abs()
        normal = mag >= torch.ldexp(torch.ones_like(e), e - 14)
        assert torch.all(
            torch.where(
                normal, err <= 2.0**-11 * mag, err <= torch.ldexp(torch.ones_like(e), e - 25)
            )
        )
        assert torch.all(
            torch.where(mag >= a * 2.0**-28, err <= 2.0**-11 * mag, err <= a * 2.0**-39)
        )


@pytest.mark.parametrize("cells", [1, 255, 256, 257, 700])
def test_fp16_codec_error_bound_at_any_amplitude(cells):
    gen = torch.Generator().manual_seed(100 + cells)
    t, b = 3, 2
    base = _log_uniform((t, b, cells), 2.0**-45, 1.0, gen)  # spans both regimes of the bound
    base[0, 1, ::7] = 0.0
    for amp in (1e-12, 1.0, 1e6, 1e30):
        x = base * amp
        y, (codes, exps) = _roundtrip("fp16", x)
        assert codes.dtype == torch.float16 and tuple(codes.shape) == (t, b, cells)
        assert exps.dtype == torch.int8 and tuple(exps.shape) == (t, b, -(-cells // INT8_BLOCK))
        assert torch.isfinite(y).all()  # never saturates, whatever the amplitude
        _fp16_assert_block_bound(x, y, exps)


def test_fp16_codec_never_worse_than_plain_fp16_below_2_pow_15():
    # a block absmax a < 2^15 gives e <= 0: values normal in plain fp16 round identically,
    # smaller ones round on a grid that contains plain fp16's subnormal grid
    gen = torch.Generator().manual_seed(11)
    x = _log_uniform((3, 2, 700), 1e-12, 3.0e4, gen)
    y, (_, exps) = _roundtrip("fp16", x)
    assert int(exps.max()) <= 0
    plain = x.half().float()
    assert torch.all((y - x).abs() <= (plain - x).abs())
    normal = x.abs() >= 2.0**-14
    assert torch.equal(y[normal], plain[normal])


def test_fp16_codec_power_of_two_amplitude_changes_only_exponents():
    gen = torch.Generator().manual_seed(7)
    x = _log_uniform((2, 2, 600), 2.0**-40, 1.0, gen)
    y, (codes, exps) = _roundtrip("fp16", x)
    for p in (-60, 10, 60):
        ys, (codes_s, exps_s) = _roundtrip("fp16", x * 2.0**p)
        assert torch.equal(codes_s, codes)
        assert torch.equal(exps_s.int(), exps.int() + p)
        assert torch.equal(ys, y * 2.0**p)


def test_fp16_codec_spike_with_tiny_neighbours():
    gen = torch.Generator().manual_seed(8)
    cells = 3 * INT8_BLOCK + 40
    x = _log_uniform((1, 1, cells), 1e-9, 1.0, gen)  # block 0: neighbours far below the spike
    x[0, 0, 10] = -1e6
    # block 1: tiny values get their own exponent, not that of block 0's spike
    x[..., INT8_BLOCK : 2 * INT8_BLOCK] = _log_uniform((1, 1, INT8_BLOCK), 1e-33, 1e-30, gen)
    x[..., 2 * INT8_BLOCK : 3 * INT8_BLOCK] = 0.0  # block 2: all zero
    y, (_, exps) = _roundtrip("fp16", x)
    _fp16_assert_block_bound(x, y, exps)
    assert int(exps[0, 0, 0]) == 19 - 14 and int(exps[0, 0, 2]) == 0  # 2^19 <= 1e6 < 2^20
    assert torch.equal(y[..., 2 * INT8_BLOCK : 3 * INT8_BLOCK], torch.zeros(1, 1, INT8_BLOCK))
    rel = (y - x).abs() / x.abs()
    assert torch.all(rel[..., INT8_BLOCK : 2 * INT8_BLOCK] <= 2.0**-11)  # not flushed by block 0


def test_fp16_codec_non_finite_block_stays_non_finite():
    x = torch.linspace(-3.0, 3.0, 3 * INT8_BLOCK).view(1, 1, -1) * 1e20
    x[0, 0, 5], x[0, 0, 6], x[0, 0, 7] = float("nan"), 1e5, 1.5  # block 0: NaN
    x[0, 0, 300], x[0, 0, 301] = float("-inf"), 2.0  # block 1: -inf
    y, (_, exps) = _roundtrip("fp16", x)
    assert exps[0, 0, :2].tolist() == [0, 0]  # plain fp16 there
    assert math.isnan(float(y[0, 0, 5]))
    assert float(y[0, 0, 6]) == math.inf  # beyond the fp16 range of a non-finite block
    assert float(y[0, 0, 7]) == 1.5 and float(y[0, 0, 301]) == 2.0
    assert float(y[0, 0, 300]) == -math.inf
    _fp16_assert_block_bound(x[..., 2 * INT8_BLOCK :], y[..., 2 * INT8_BLOCK :], exps[..., 2:])


def test_bf16_codec_relative_error_within_half_ulp():
    gen = torch.Generator().manual_seed(3)
    x = _log_uniform((4, 2, 500), 1e-30, 1e30, gen)
    y, parts = _roundtrip("bf16", x)
    assert parts[0].dtype == torch.bfloat16
    assert torch.all((y - x).abs() <= 2.0**-8 * x.abs())


def _int8_blocks(x: torch.Tensor):
    """Yield (block values, block decoded index slice, block number) per row block."""
    c = x.shape[-1]
    for k in range(-(-c // INT8_BLOCK)):
        yield k, slice(k * INT8_BLOCK, min((k + 1) * INT8_BLOCK, c))


@pytest.mark.parametrize("cells", [1, 200, 256, 257, 700])
def test_int8_codec_error_within_absmax_over_254_per_block(cells):
    gen = torch.Generator().manual_seed(cells)
    t, b = 3, 2
    # each block gets its own magnitude, so one global scale would fail the bound
    x = torch.randn((t, b, cells), generator=gen)
    mags = _log_uniform((t, b, cells), 1e-6, 1e6, gen).abs()
    for _, sl in _int8_blocks(x):
        x[..., sl] *= mags[..., sl.start : sl.start + 1]
    x[1, 0, :] = 0.0  # an all-zero row: all its blocks are zero
    x[2, 1, :] = 1e-3  # a single-spike row
    x[2, 1, cells // 2] = -5e3
    y, (codes, scales) = _roundtrip("int8", x)
    nblk = -(-cells // INT8_BLOCK)
    assert codes.dtype == torch.int8 and tuple(codes.shape) == (t, b, cells)
    assert scales.dtype == torch.float32 and tuple(scales.shape) == (t, b, nblk)
    assert int(codes.abs().max()) <= 127
    for k, sl in _int8_blocks(x):
        absmax = x[..., sl].abs().amax(-1, keepdim=True)  # (T, B, 1)
        err = (y[..., sl] - x[..., sl]).abs()
        assert torch.all(err <= absmax / 254 * (1 + _ULP_SLACK)), f"block {k}"
        assert torch.equal(scales[..., k], (absmax[..., 0] / 127))
    assert torch.equal(y[1, 0], torch.zeros(cells))  # zeros decode exactly
    assert torch.equal(scales[1, 0], torch.zeros(nblk))
    assert float(y[2, 1, cells // 2]) == -5e3  # the spike is the block's absmax: exact


def test_int8_codec_zero_block_next_to_nonzero_block():
    x = torch.zeros((1, 1, 3 * INT8_BLOCK + 10))
    x[..., INT8_BLOCK : 2 * INT8_BLOCK] = torch.linspace(-2.0, 3.0, INT8_BLOCK)
    x[..., -10:] = 7.0
    y, (_, scales) = _roundtrip("int8", x)
    want = torch.tensor([0.0, 3.0, 0.0, 7.0]) / 127  # fp32 division, as the codec does
    assert torch.equal(scales[0, 0], want)
    assert torch.equal(y[..., :INT8_BLOCK], x[..., :INT8_BLOCK])
    assert torch.equal(
        y[..., 2 * INT8_BLOCK : 3 * INT8_BLOCK], x[..., 2 * INT8_BLOCK : 3 * INT8_BLOCK]
    )
    assert torch.all((y[..., -10:] - 7.0).abs() <= 7.0 * _ULP_SLACK)


@pytest.mark.parametrize("name", list(CODECS))
def test_codec_decode_into_out_matches_fresh_decode(name):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((4, 2, 300), generator=gen)
    codec = get_codec(name)
    parts = codec.allocate(4, 2, 300, CPU)
    codec.encode(x, parts)
    out = torch.full((6, 2, 300), float("nan"))
    codec.decode([p[1:3] for p in parts], out=out[2:4])
    assert torch.equal(out[2:4], codec.decode(parts)[1:3])
    assert torch.isnan(out[:2]).all() and torch.isnan(out[4:]).all()  # nothing else touched


@pytest.mark.parametrize("name", list(CODECS))
def test_codec_encode_of_sub_chunk_matches_whole_chunk(name):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn((6, 2, 513), generator=gen)
    codec = get_codec(name)
    whole = codec.allocate(6, 2, 513, CPU)
    codec.encode(x, whole)
    pieces = codec.allocate(6, 2, 513, CPU)
    codec.encode(x[:2], [p[:2] for p in pieces])
    codec.encode(x[2:], [p[2:] for p in pieces])
    assert all(torch.equal(a, b) for a, b in zip(whole, pieces, strict=True))


@pytest.mark.parametrize("name", list(CODECS))
def test_codec_encode_of_non_contiguous_chunk_matches_contiguous(name):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn((300, 2, 3), generator=gen).permute(2, 1, 0)  # (3, 2, 300), cell stride 6
    codec = get_codec(name)
    a, b = codec.allocate(3, 2, 300, CPU), codec.allocate(3, 2, 300, CPU)
    codec.encode(x, a)
    codec.encode(x.contiguous(), b)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


@pytest.mark.parametrize("cells", [0, 1, 255, 256, 1000, 4096])
def test_ring_nbytes_formula_per_dtype(cells):
    nt, b = 7, 3
    assert ring_nbytes(nt, b, cells, "fp32") == nt * b * 4 * cells
    assert ring_nbytes(nt, b, cells, "fp16") == nt * b * (2 * cells + math.ceil(cells / 256))
    assert ring_nbytes(nt, b, cells, "bf16") == nt * b * 2 * cells
    assert ring_nbytes(nt, b, cells, "int8") == nt * b * (cells + 4 * math.ceil(cells / 256))
    for name in CODECS:
        parts = get_codec(name).allocate(nt, b, cells, CPU)
        assert sum(p.nbytes for p in parts) == ring_nbytes(nt, b, cells, name)


def test_ring_nbytes_int8_is_about_3_9_times_smaller():
    ratio = ring_nbytes(10, 2, 4096, "fp32") / ring_nbytes(10, 2, 4096, "int8")
    assert ratio == pytest.approx(4 / (1 + 4 / 256))
    assert 3.9 < ratio < 4.0


def test_get_codec_unknown_name_lists_valid_ones():
    with pytest.raises(FwiArgumentError, match=r"storage_dtype.*fp32.*fp16.*bf16.*int8.*'fp8'"):
        get_codec("fp8")
