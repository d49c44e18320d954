"""Process heap policy: keep freed memory for reuse while sweeps flow (glibc ``mallopt``), and
give it back to the operating system on demand (``malloc_trim``).

:func:`hold_heap`: glibc returns the top of the heap to the kernel when more than 128 KiB is free
there and serves every allocation over 128 KiB (a ground grid, a cluster's neighbour table) with
its own ``mmap``, so each sweep faulted in several MB of fresh zero pages: 1,341 minor page
faults per call of the ground kernel on a 32k-point sweep, 8.5 ms of which ~4 ms were the faults
(a 2-core VM; measured with ``getrusage``). Holding up to 128 MiB of freed heap and serving
allocations up to 32 MiB from it removes them.

A vocabulary of 10,000 names builds its text bank on the node's vocabulary thread; glibc keeps
the freed blocks of that thread's arena, so the process stayed ~265 MB larger after going back
to two labels (measured with the demo CLIP: 1058 MB -> 1321 MB, and 1056 MB after a trim).
Elsewhere (musl, macOS, Windows) this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Optional

log = logging.getLogger(__name__)
_libc: Optional[ctypes.CDLL] = None
_tried = False


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc, _tried
    if not _tried:
        _tried = True
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
        except OSError:
            _libc = None
    return _libc


HOLD_HEAP_ENV = "CLIP2_HOLD_HEAP"  # "0": leave glibc's defaults (the node and the clip2 CLI call hold_heap)
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def hold_heap(trim_threshold_mb: int = 128, mmap_threshold_mb: int = 32, top_pad_mb: int = 16) -> bool:
    """Keep up to ``trim_threshold_mb`` of freed heap for reuse and serve allocations up to
    ``mmap_threshold_mb`` (glibc's maximum is 32) from the heap; True when glibc took all three.
    Process-wide; the node calls it at start (``CLIP2_HOLD_HEAP=0`` skips it). :func:`trim_heap`
    still gives memory back when asked."""
    lib = _glibc()
    if lib is None:
        return False
    try:
        return all(bool(lib.mallopt(p, int(v) << 20)) for p, v in ((_M_MMAP_THRESHOLD, mmap_threshold_mb),
                                                                   (_M_TRIM_THRESHOLD, trim_threshold_mb),
                                                                   (_M_TOP_PAD, top_pad_mb)))
    except Exception as exc:  # noqa: BLE001 - never worth failing over
        log.debug("mallopt failed: %s", exc)
        return False


def trim_heap() -> bool:
    """``malloc_trim(0)`` where glibc provides it; True when memory was released."""
    _glibc()
    if _libc is None:
        return False
    try:
        return bool(_libc.malloc_trim(0))
    except Exception as exc:  # noqa: BLE001 - never worth failing over
        log.debug("malloc_trim failed: %s", exc)
        return False
