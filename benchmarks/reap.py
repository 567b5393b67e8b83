"""Run one command and report its own wall time and peak resident memory: benchmarks.common.run_proc's launcher.

    python -S benchmarks/reap.py RESULT.json CMD [ARG ...]

Why a launcher: on Linux a child's ru_maxrss (from wait4, or its own RUSAGE_SELF) is at least its
parent's resident high-water mark at the fork/exec, since exec records the replaced address space's
peak; children of the benchmark (torch loaded, ~700 MiB) all read as that much whatever they use.
This process is small, so the peak it reads for the command it starts is the command's own.
wait4's ru_maxrss is the largest of the command and the children it reaped (a cell's tracking
process, forked from it), so the command's own peak is also read, as VmHWM from /proc/<pid>/status
every 20 ms until it exits (a pidfd wakes this launcher at its exit) (the high-water mark only rises: the last reading is its peak, short of
what it adds in its last 20 ms).
NORMLAB_T0 (pipeline.train's start-up clock) is set just before the launch, and the wall time is
taken around it, so neither counts this launcher's own start. Standard library only; exits with
the command's exit code and writes {"wall_s", "maxrss_kib", "hwm_kib", "returncode"} to RESULT.json
(hwm_kib: null if never read).
"""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time


def vm_hwm_kib(pid: int):
    """The process's resident high-water mark (VmHWM, KiB), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def main() -> int:
    result, cmd = sys.argv[1], sys.argv[2:]
    os.environ["NORMLAB_T0"] = repr(time.time())
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    signal.signal(signal.SIGTERM, lambda *_: proc.kill())  # run_proc's timeout: the command goes too
    try:  # readable when the command exits: the wall time is not rounded up to the 20 ms poll
        exited = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        exited = None
    hwm = None
    while True:  # the command's own peak, until it exits (a zombie has no VmHWM: the last reading stays)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # this child's rusage (and its reaped children's)
        if pid:
            break
        hwm = max(hwm or 0, vm_hwm_kib(proc.pid) or 0) or hwm
        if exited is None:
            time.sleep(0.02)
        else:
            select.select([exited], [], [], 0.02)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as f:
        json.dump({"wall_s": wall, "maxrss_kib": usage.ru_maxrss, "hwm_kib": hwm, "returncode": code}, f)  # Linux: KiB
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
