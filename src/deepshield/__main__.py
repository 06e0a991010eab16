"""`python -m deepshield ...` (also what `torchrun -m deepshield` runs)."""

from deepshield.cli import main

if __name__ == "__main__":
    main()
