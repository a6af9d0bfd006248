"""``python -m fwi_cli`` runs the command line (also what ``torchrun -m fwi_cli`` starts)."""

from fwi_cli.cli import main

if __name__ == "__main__":
    main()
