import sys

from gobtfgen.cli import main

sys.exit(main())
