"""How much memory this process may use: its limits, its cgroup's, and the machine's."""

import os
import resource


def _cgroup_limit():
    """The memory limit of this process's cgroup (v2 ``memory.max``, or v1), or ``None``."""
    candidates = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                parts = line.strip().split(":", 2)
                if len(parts) == 3 and parts[1] in ("", "memory"):
                    candidates.append((parts[1], parts[2]))
    except OSError:
        return None
    for controller, path in candidates:
        name = "memory.max" if controller == "" else "memory.limit_in_bytes"
        base = "/sys/fs/cgroup" if controller == "" else "/sys/fs/cgroup/memory"
        for folder in (os.path.join(base, path.lstrip("/")), base):
            try:
                with open(os.path.join(folder, name)) as f:
                    text = f.read().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 2**60:
                return int(text)
    return None


def physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def memory_limits():
    """``[(bytes, what)]`` of every limit on this process's memory, smallest first."""
    limits = []
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append((soft, "its address-space limit (ulimit -v, RLIMIT_AS)"))
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limits.append((cgroup, "its cgroup's memory limit"))
    physical = physical_memory()
    if physical:
        limits.append((physical, "the machine's memory"))
    return sorted(limits)


def describe_limit():
    """``"4.0 GB (its address-space limit (ulimit -v, RLIMIT_AS))"``: the tightest limit."""
    limits = memory_limits()
    if not limits:
        return None
    size, what = limits[0]
    return f"{size / 2**30:.1f} GB ({what})"


def ran_out(error):
    """Whether a Python exception says memory ran out (also a library that could not be mapped)."""
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, ImportError) and any(
        text in str(error) for text in ("failed to map segment", "Cannot allocate memory"))


def out_of_memory_line(error):
    """The one line for an out-of-memory :func:`ran_out` found outside the training step."""
    limit = describe_limit()
    what = ("loading a library" if isinstance(error, ImportError) else "allocating")
    return (f"Out of memory while {what} ({str(error).strip()[:160] or type(error).__name__})"
            + (f"; this process may use {limit}" if limit else "")
            + ". TensorFlow alone needs a few GB of address space: raise the limit, or free "
            "memory, and run the command again.")
