"""``python -m isobox.agent --port-name NAME | --fd N [--state-dir DIR]``."""

import os
import sys

from isobox.agent.cli import main

code = main(sys.argv[1:])
# No interpreter teardown: module and GC finalisation buy nothing here.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
