"""Entry point of the arbiter role: ``python -m modelplane.privacy.vertical.arbiter --help``."""

from modelplane.privacy.vertical.cli import main

if __name__ == "__main__":
    main("arbiter")
