import sys

from mobieye.cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
