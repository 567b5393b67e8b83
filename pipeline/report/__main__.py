"""python -m pipeline.report --runs runs --out reports"""

import sys

from pipeline.report.cli import main

sys.exit(main())
