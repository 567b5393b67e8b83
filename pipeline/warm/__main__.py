"""`python -m pipeline.warm status|start [--wait]|stop` (pipeline.warm.client.main)."""

import sys

from pipeline.warm import client

if __name__ == "__main__":
    sys.exit(client.main())
