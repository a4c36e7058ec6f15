"""Process tuning for training: thread pools, memory reuse, and the machine a run is recorded on.

The ``dgl-capsules`` command calls :func:`reuse_freed_memory` once and
:func:`set_threads` for every command; a training script of your own can do
the same.
"""
import os
import platform
from numbers import Integral

import torch

__all__ = ["set_threads", "reuse_freed_memory", "machine"]


def set_threads(n=None):
    """Give torch and DGL the same number of OpenMP threads; return it.

    torch and DGL 2.1 link two different OpenMP runtimes (torch its bundled
    ``libgomp``, DGL the system's), so each has a thread pool of its own;
    this sizes both (:func:`torch.set_num_threads`,
    :func:`dgl.utils.set_num_threads`) and ``OMP_NUM_THREADS`` for child processes.

    Parameters
    ----------
    n : int, optional
        Threads per process. Default: ``OMP_NUM_THREADS`` if it is set, else
        the usable cores divided by the processes on this machine
        (``LOCAL_WORLD_SIZE`` under torchrun), at least 1.
    """
    if n is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            n = int(env)
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            n = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"threads must be a positive integer; got {n!r}")
    from dgl.utils import set_num_threads

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(int(n))
    set_num_threads(int(n))
    return int(n)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters in glibc's malloc.h


def reuse_freed_memory():
    """Keep memory freed by one training step for the next one; return whether it applied (glibc only).

    Routing allocates and frees edge tensors of tens of MB on every step. By
    default glibc gives blocks above its mmap threshold (at most 32 MB) back to
    the kernel when they are freed, so the next step's tensor of the same size
    is faulted in again page by page, zeroed by the kernel: on a 2-core VM
    this cost a quarter of a MatrixCapsNet step (``bench/bench_em_step.py``).
    This asks glibc (``mallopt``) to serve every block from its heap
    (``M_MMAP_MAX = 0``) and never to trim the heap (``M_TRIM_THRESHOLD`` at
    its largest), so freed blocks are reused without page faults; the resident
    memory of the process then stays at its peak, which a training process
    reaches in its first step anyway. The same as starting Python with
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` in the
    environment. The ``dgl-capsules`` command does this for the command it
    runs; call it at the start of your own training script. It lasts for the
    whole process and does nothing (returns ``False``) on a C library other
    than glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def machine():
    """The CPU, cores and the Python, torch and DGL versions of this process, as a dict (recorded in metrics)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import dgl

    return dict(cpu=cpu, machine=platform.machine(), cores=os.cpu_count(), python=platform.python_version(),
                torch=torch.__version__, dgl=dgl.__version__)
