import sys

from pixcrawler_exporter.cli import main

sys.exit(main())
