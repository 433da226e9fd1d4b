"""``python -I -m isobox.shim CONTAINER_DIR --ready-fd N``: one container's monitor."""

import os
import sys

from isobox.shim.main import main

code = main(sys.argv[1:])
# No interpreter teardown: module and GC finalisation buy nothing here.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
