"""Entry point of the host role: ``python -m modelplane.privacy.vertical.host --help``."""

from modelplane.privacy.vertical.cli import main

if __name__ == "__main__":
    main("host")
