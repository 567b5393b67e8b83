"""normlab: what happens to a network when its normalization statistics leave the gradient step."""
import os as _os

# nothing normlab starts may report usage to outside hosts; a user who wants it sets these first
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_os.environ.setdefault("DO_NOT_TRACK", "true")
_os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
_os.environ.setdefault("DVC_NO_ANALYTICS", "true")
# numpy's OpenBLAS pool and pyarrow's jemalloc thread start at their import; normlab's processes
# stay single-threaded because they fork (a cell its tracking process, the report its figure
# drawers, the warm server its cells), and forking a threaded process can deadlock the child
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
