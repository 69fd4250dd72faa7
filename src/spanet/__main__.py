"""`python -m spanet ...` and `torchrun -m spanet train ...` enter here."""

from spanet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
