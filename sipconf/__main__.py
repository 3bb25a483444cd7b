import sys

from sipconf.cli import main

sys.exit(main())
