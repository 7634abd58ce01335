import sys

from drummachine.cli.main import main

sys.exit(main())
