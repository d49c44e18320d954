import sys

from clip2_core.cli import main

sys.exit(main())
