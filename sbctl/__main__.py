import sys

from sbctl.cli import main

sys.exit(main())
