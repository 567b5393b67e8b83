"""Run one command and report its own wall time and peak resident memory: benchmarks.common.run_proc's launcher.

    python -S benchmarks/reap.py RESULT.json CMD [ARG ...]

Why a launcher: on Linux a child's ru_maxrss (from wait4, or its own RUSAGE_SELF) is at least its
parent's resident high-water mark at the fork/exec, since exec records the replaced address space's
peak; children of the benchmark (torch loaded, ~700 MiB) all read as that much whatever they use.
This process is small, so the peak it reads for the command it starts is the command's own.
NORMLAB_T0 (pipeline.train's start-up clock) is set just before the launch, and the wall time is
taken around it, so neither counts this launcher's own start. Standard library only; exits with
the command's exit code and writes {"wall_s", "maxrss_kib", "returncode"} to RESULT.json.
"""

import json
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    result, cmd = sys.argv[1], sys.argv[2:]
    os.environ["NORMLAB_T0"] = repr(time.time())
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    signal.signal(signal.SIGTERM, lambda *_: proc.kill())  # run_proc's timeout: the command goes too
    _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage alone
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as f:
        json.dump({"wall_s": wall, "maxrss_kib": usage.ru_maxrss, "returncode": code}, f)  # Linux: KiB
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
