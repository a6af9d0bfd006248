"""Source wavelets.

The Ricker wavelet (second derivative of a Gaussian, peak-normalised to 1 at t = 0):

    r(t) = (1 - 2 pi^2 f^2 t^2) exp(-pi^2 f^2 t^2)

with f the peak frequency in Hz and t in seconds. Shift it with ``ricker(t - delay, f)``.
"""

from __future__ import annotations

import numpy as np

from fwi_cli.errors import FwiArgumentError


def ricker(t: np.ndarray, f: float) -> np.ndarray:
    """Ricker wavelet sampled at times ``t``.

    Args:
        t: (nt,) times in seconds (already shifted by the delay).
        f: peak frequency in Hz, > 0.

    Returns:
        (nt,) float32 array.
    """
    if not np.isfinite(f) or f <= 0:
        raise FwiArgumentError(f"ricker: frequency f must be a positive number of Hz, got {f!r}")
    t = np.asarray(t, dtype=np.float64)
    a = (np.pi * f * t) ** 2
    return ((1.0 - 2.0 * a) * np.exp(-a)).astype(np.float32)


def dominant_frequency(wavelet: np.ndarray, dt: float) -> float:
    """Frequency (Hz) of the amplitude-spectrum peak of a wavelet sampled every ``dt`` s."""
    w = np.asarray(wavelet, dtype=np.float64).reshape(-1)
    n = max(len(w), 2)
    spec = np.abs(np.fft.rfft(w, n=4 * n))
    freqs = np.fft.rfftfreq(4 * n, d=dt)
    if spec.max() == 0:
        return 0.0
    return float(freqs[int(np.argmax(spec))])
