"""One CPU for a function that Lambda gives at most one vCPU's time.

Lambda shares CPU time in proportion to memory (one vCPU's worth at 1,769 MB) and may show the
function more than one CPU (not verified here). A sweep's threads then run botocore on two CPUs in
turn under the GIL, which, measured under a cgroup quota of the same share, costs CPU per call
(README, "Benchmark"). Kept on one CPU, the threads lose no CPU time they could have had."""

import os
from collections.abc import Mapping

FULL_VCPU_MB = 1769


def pin_to_one_cpu(environ: Mapping[str, str] = os.environ) -> int | None:
    """Keep this thread, and the threads it starts from now on, on one of its CPUs when the function's
    memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE) buys at most one vCPU; the CPU, or None when left as is."""
    memory = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if not memory.isdigit() or int(memory) > FULL_VCPU_MB:
        return None
    try:
        allowed = os.sched_getaffinity(0)
        if len(allowed) < 2:
            return None
        cpu = min(allowed)
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):  # not Linux, or not permitted: run as before
        return None
    return cpu
