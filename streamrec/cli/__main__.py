"""``python -m streamrec.cli``: the command line, as the console script ``streamrec`` runs it."""

from streamrec.cli import main

main()
