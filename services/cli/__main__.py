"""`python -m services.cli` (installed as `audience-bridge`)."""

from services.cli.main import main

if __name__ == "__main__":
    main()
