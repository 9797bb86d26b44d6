"""heap.release_free_memory: freed heap blocks go back to the system (glibc), so peak RSS between CPU batches does
not keep what earlier batches freed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from autorerank.heap import _malloc_trim, release_free_memory

GLIBC = pytest.mark.skipif(_malloc_trim() is None, reason="a C library without malloc_trim")

# Many small blocks (under glibc's mmap threshold, so they live in the heap) are freed, all but one near the
# top, which keeps the heap from shrinking by itself; RSS is read before and after the release.
_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from autorerank.heap import release_free_memory
    def rss():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:")) // 1024
    blocks = [bytearray(64 * 1024) for _ in range(3000)]
    keep = blocks[-1]
    del blocks
    before = rss()
    assert release_free_memory()
    print(before, rss())
    """
)


@GLIBC
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_release_free_memory_gives_freed_heap_pages_back() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    before, after = map(int, out.split())
    assert before - after > 100  # MiB: most of the ~190 MiB freed


def test_release_free_memory_says_whether_it_could() -> None:
    assert release_free_memory() is (_malloc_trim() is not None)
