"""The suite's own machinery in tests/conftest.py: what a test process reads of itself to decide whether it
keeps its compiled programs from one module to the next."""

import os
import resource
import sys

import numpy as np
import pytest

from conftest import KEEP_BYTES, resident_bytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
def test_resident_bytes_is_this_processs_memory_and_grows_with_what_it_holds():
    """On Linux the memory held is read (not None: otherwise every module would clear JAX's caches), lies
    between 1 MiB and the machine's memory, never above the kernel's peak resident size of this process
    (getrusage; a virtual size, which JAX's reservations inflate, would be), and grows by about what an
    array of 256 MiB adds once written."""
    before = resident_bytes()
    assert before is not None and 2**20 < before < os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    held = np.ones(2**25)  # 256 MiB of float64, every page written
    after = resident_bytes()
    assert after - before > 0.9 * held.nbytes, (before, after)
    assert after <= 1.01 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss in KiB on Linux
    assert KEEP_BYTES == int(os.environ.get("TOKDYN_TEST_KEEP_BYTES", 2 << 30))
