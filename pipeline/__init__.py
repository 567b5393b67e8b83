"""normlab: what happens to a network when its normalization statistics leave the gradient step."""

import os as _os

from pipeline.spec import environment as _environment

# nothing normlab starts may report usage to outside hosts; a user who wants it sets these first
# (the variables and the rule: pipeline/spec/environment.py)
_environment.apply()
# numpy's OpenBLAS pool and pyarrow's jemalloc thread start at their import; normlab's processes
# stay single-threaded because they fork (a cell its tracking process, the report its figure
# drawers, the warm server its cells), and forking a threaded process can deadlock the child
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
