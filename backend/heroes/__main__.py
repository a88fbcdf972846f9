import sys

from heroes.cli import main

sys.exit(main())
