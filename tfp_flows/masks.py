"""Binary masks for coupling layers.

A mask has the event's shape; entries equal to 1 are passed through unchanged and condition
the transformation of the entries equal to 0 (the RealNVP convention, Dinh et al. 2016).

Vector events ``[D]``: ``half`` (first ceil(D/2) kept), ``alternating`` (even indices kept).
Image events ``[H, W, C]``: ``checkerboard`` ((i + j) even kept, all channels) and
``channel`` (first half of the channels kept). ``invert=True`` swaps the roles, which is what
consecutive coupling layers use.

An image mask that is the same at every pixel (``channel``, or ``checkerboard`` written in
``Squeeze``'s space-to-depth layout) splits channels, not pixels: ``channel_pattern`` returns
its ``[C]`` pattern, and coupling layers then give their conditioners only the kept channels.
"""

import numpy as np

from tfp_flows.core import as_event_shape

__all__ = ["half", "alternating", "checkerboard", "channel", "make", "validate_mask",
           "channel_pattern"]


def _finish(mask, invert):
  mask = mask.astype(np.float32)
  return 1. - mask if invert else mask


def half(event_size, invert=False):
  """[1, ..., 1, 0, ..., 0]: the first ceil(D/2) entries condition the rest."""
  (d,) = as_event_shape(event_size)
  if d < 2:
    raise ValueError(f"a coupling mask needs an event size of at least 2, got {d}.")
  return _finish(np.arange(d) < (d + 1) // 2, invert)


def alternating(event_size, invert=False):
  """[1, 0, 1, 0, ...]: even indices condition odd indices."""
  (d,) = as_event_shape(event_size)
  if d < 2:
    raise ValueError(f"a coupling mask needs an event size of at least 2, got {d}.")
  return _finish(np.arange(d) % 2 == 0, invert)


def checkerboard(event_shape, invert=False):
  """[H, W, C] mask with 1 where (row + column) is even, for every channel."""
  h, w, c = _image_shape(event_shape)
  board = (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0
  return _finish(np.broadcast_to(board[:, :, None], (h, w, c)), invert)


def channel(event_shape, invert=False):
  """[H, W, C] mask with 1 on the first ceil(C/2) channels."""
  h, w, c = _image_shape(event_shape)
  if c < 2:
    raise ValueError(f"a channel mask needs at least 2 channels, got event shape {[h, w, c]}.")
  return _finish(np.broadcast_to(np.arange(c) < (c + 1) // 2, (h, w, c)), invert)


def _image_shape(event_shape):
  shape = as_event_shape(event_shape)
  if len(shape) != 3:
    raise ValueError(f"image masks need an [H, W, C] event shape, got {list(shape)}.")
  return shape


_KINDS = {"half": half, "alternating": alternating, "checkerboard": checkerboard,
          "channel": channel}


def make(kind, event_shape, invert=False):
  """Mask by name: one of 'half', 'alternating', 'checkerboard', 'channel'."""
  if kind not in _KINDS:
    raise ValueError(f"unknown mask kind {kind!r}; expected one of {sorted(_KINDS)}.")
  return _KINDS[kind](event_shape, invert=invert)


def validate_mask(mask, event_shape=None):
  """Checks a mask is binary, has both kinds of entries and (optionally) the event shape."""
  mask = np.asarray(mask)
  if mask.ndim == 0:
    raise ValueError("mask must have the event's shape, got a scalar.")
  if event_shape is not None and tuple(mask.shape) != tuple(as_event_shape(event_shape)):
    raise ValueError(f"mask shape {list(mask.shape)} does not match event shape "
                     f"{list(as_event_shape(event_shape))}.")
  if not np.all((mask == 0) | (mask == 1)):
    raise ValueError("mask entries must be 0 or 1.")
  if mask.all() or not mask.any():
    raise ValueError("mask must contain both 1s (conditioning) and 0s (transformed entries).")
  return mask.astype(np.float32)


def channel_pattern(mask):
  """The ``[C]`` 0/1 pattern of an ``[H, W, C]`` mask that is the same at every pixel, else
  None (vector masks and masks that vary over the pixels, e.g. a full-resolution
  checkerboard)."""
  mask = np.asarray(mask)
  if mask.ndim != 3:
    return None
  rows = mask.reshape(-1, mask.shape[-1])
  return rows[0].copy() if np.all(rows == rows[0]) else None
