import sys

from llm.attribute import main
from probes.cli import guarded_main

sys.exit(guarded_main(main))
