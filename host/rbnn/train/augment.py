"""Random affine jitter of square images for training (shift, rotation, zoom).

Integer shifts keep pixel values (and so their bit-planes) exact; rotation and zoom
resample bilinearly with zeros outside the image.
"""

from __future__ import annotations

import numpy as np


def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, int],
    shift: float,
    rotate: float = 0.0,
    zoom: float = 0.0,
) -> np.ndarray:
    """Random affine jitter of images with bilinear resampling (zero outside).

    Parameters
    ----------
    x : ndarray of uint8, shape (n, h * w)
    rng : numpy Generator
    shape : (h, w)
    shift : float
        Max translation in pixels, each axis uniform in [-shift, shift].
    rotate : float
        Max rotation in degrees.
    zoom : float
        Max relative scale change.

    Returns
    -------
    ndarray of uint8, shape (n, h * w)
    """
    n = len(x)
    h, w = shape
    if n == 0 or (shift == 0 and rotate == 0 and zoom == 0):
        return x
    if shift and not rotate and not zoom:
        # Integer shifts need no resampling; keep the pixel values (and bit-planes) exact.
        return _shift_int(x, rng, shape, int(round(shift)))
    ang = np.deg2rad(rng.uniform(-rotate, rotate, n)) if rotate else np.zeros(n)
    sc = 1.0 + (rng.uniform(-zoom, zoom, n) if zoom else np.zeros(n))
    tx = rng.uniform(-shift, shift, n)
    ty = rng.uniform(-shift, shift, n)
    return warp(x, shape, ang, sc, tx, ty)


def warp(
    x: np.ndarray, shape: tuple[int, int], ang: np.ndarray, scale: np.ndarray, tx: np.ndarray, ty: np.ndarray
) -> np.ndarray:
    """Rotate each image by ``ang`` radians about its centre (positive: clockwise as the
    image is displayed, row 0 at the top), scale it by ``scale`` and
    move it by ``(tx, ty)`` pixels; bilinear resampling, zeros outside.

    Parameters
    ----------
    x : ndarray of uint8, shape (n, h * w)
    shape : (h, w)
    ang, scale, tx, ty : float arrays, shape (n,)

    Returns
    -------
    ndarray of uint8, shape (n, h * w)
    """
    n = len(x)
    h, w = shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w]
    yy = (yy.reshape(-1) - cy).astype(np.float32)
    xx = (xx.reshape(-1) - cx).astype(np.float32)
    # Inverse map: output pixel -> source coordinate.
    cos = (np.cos(ang) / scale).astype(np.float32)[:, None]
    sin = (np.sin(ang) / scale).astype(np.float32)[:, None]
    sx = cos * xx + sin * yy + cx - np.asarray(tx)[:, None].astype(np.float32)
    sy = -sin * xx + cos * yy + cy - np.asarray(ty)[:, None].astype(np.float32)
    # Two pixels of zero border; coordinates clipped into it, so a source point outside
    # the image reads only zeros.
    p = 2
    sx = np.clip(sx, -p, w - 1 + p - 1)
    sy = np.clip(sy, -p, h - 1 + p - 1)
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = sx - x0
    fy = sy - y0
    wp = w + 2 * p
    img = np.zeros((n, h + 2 * p, wp), np.float32)
    img[:, p:-p, p:-p] = x.reshape(n, h, w)
    base = (y0.astype(np.int64) + p) * wp + (x0.astype(np.int64) + p)
    base += (np.arange(n, dtype=np.int64) * img[0].size)[:, None]
    flat = img.reshape(-1)
    v00 = flat[base]
    v01 = flat[base + 1]
    v10 = flat[base + wp]
    v11 = flat[base + wp + 1]
    out = (v00 * (1 - fx) + v01 * fx) * (1 - fy) + (v10 * (1 - fx) + v11 * fx) * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def rotate(x: np.ndarray, shape: tuple[int, int], degrees: float, batch: int = 5000) -> np.ndarray:
    """Every image rotated by ``degrees`` about its centre (the angle of ``warp``): uint8
    (n, h * w), bilinear, zeros outside (a sensor mounted at an angle)."""
    out = np.empty_like(x)
    for lo in range(0, len(x), batch):
        k = len(x[lo : lo + batch])
        ang = np.full(k, np.deg2rad(degrees))
        out[lo : lo + k] = warp(x[lo : lo + k], shape, ang, np.ones(k), np.zeros(k), np.zeros(k))
    return out


def _shift_int(x: np.ndarray, rng: np.random.Generator, shape: tuple[int, int], s: int) -> np.ndarray:
    n = len(x)
    h, w = shape
    pad = np.zeros((n, h + 2 * s, w + 2 * s), np.uint8)
    pad[:, s : s + h, s : s + w] = x.reshape(n, h, w)
    dy = rng.integers(0, 2 * s + 1, n)
    dx = rng.integers(0, 2 * s + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]  # (n, h)
    cols = dx[:, None] + np.arange(w)[None, :]  # (n, w)
    out = pad[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.reshape(n, h * w)
