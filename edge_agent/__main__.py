import sys

from mobieye.cli import main

sys.exit(main(["edge", *sys.argv[1:]]))
