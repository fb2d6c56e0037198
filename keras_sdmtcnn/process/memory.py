"""How much memory this process may use: its limits, its cgroup's, and the machine's."""

import errno
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


def _limited():
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return soft != resource.RLIM_INFINITY or _cgroup_limit() is not None


def ran_out(error):
    """The exception, ``error`` or one it came from, that says memory ran out (else ``None``).

    A ``MemoryError``; ``ENOMEM`` from the system; a library that could not
    be mapped; and, under a memory limit, a module left half imported (an
    import that failed for lack of memory, which a library caught).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if isinstance(error, MemoryError) or getattr(error, "errno", None) == errno.ENOMEM:
            return error
        if isinstance(error, ImportError) and any(
                t in text for t in ("failed to map segment", "Cannot allocate memory")):
            return error
        if isinstance(error, AttributeError) and "partially initialized module" in text and (
                _limited()):
            return error
        error = error.__cause__ or error.__context__
    return None


def out_of_memory_line(error):
    """The one line for an out-of-memory :func:`ran_out` found outside the training step."""
    cause = ran_out(error) or error
    if isinstance(cause, AttributeError):
        module = str(cause).split("'")[1] if "'" in str(cause) else "a module"
        what = f"loading {module}, which could not finish loading"
    elif isinstance(cause, MemoryError):
        what = "allocating"
    else:
        what = f"loading a library ({str(cause).strip()[:160]})"
    limit = describe_limit()
    return (f"Out of memory while {what}" + (f"; this process may use {limit}" if limit else "")
            + ". TensorFlow alone needs a few GB of address space: raise the limit, or free "
            "memory, and run the command again.")
