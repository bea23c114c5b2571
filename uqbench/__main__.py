import sys

from uqbench.cli import main

sys.exit(main())
