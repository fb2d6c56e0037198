"""Starting several workers of one multi-worker job on 127.0.0.1, for the tests.

Ports come from below the kernel's ephemeral range, where no process gets
one without asking for it by number, chosen at random per call and checked
free; a TensorFlow server still cannot share a port with a socket that
holds it (it refuses SO_REUSEPORT), so the ports are released before the
workers start, and a job whose server lost that race ("Could not start gRPC
server") is started again on new ports.
"""

import json
import os
import random
import socket
import subprocess
import sys
import time

from conftest import REPO

BIND_RACE = "Could not start gRPC server"


def _ephemeral_start():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n):
    """``n`` distinct ports that are free now, below the ephemeral range."""
    rng = random.Random(os.getpid() * 7919 + time.monotonic_ns())
    top = min(_ephemeral_start(), 32768) - 1
    ports = []
    while len(ports) < n:
        port = rng.randrange(20000, top)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def start(argv_for, n=2, env=None, ports=None):
    """Starts ``n`` workers; ``argv_for(index)`` is worker ``index``'s command line."""
    ports = ports or free_ports(n)
    procs = []
    for index in range(n):
        procs.append(subprocess.Popen(
            argv_for(index), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {}),
                 "TF_CONFIG": tf_config(ports, index)}))
    return procs, ports


def finish(procs, timeout=240):
    """``[(returncode, stdout, stderr)]`` of started workers (killed past ``timeout``)."""
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def run_job(argv_for, n=2, env=None, timeout=240, attempts=3):
    """Runs one job to its end: ``[(returncode, stdout, stderr)]`` per worker."""
    for _ in range(attempts):
        results = finish(start(argv_for, n, env)[0], timeout)
        if not any(BIND_RACE in err for _, _, err in results):
            return results
    return results


def fit_argv(recipe, run_dir, *extra):
    return lambda index: [sys.executable, "-m", "keras_sdmtcnn.fit", str(recipe), "--run-dir",
                          str(run_dir(index) if callable(run_dir) else run_dir), *extra]
