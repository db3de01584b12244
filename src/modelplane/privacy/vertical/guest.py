"""Entry point of the guest role: ``python -m modelplane.privacy.vertical.guest --help``."""

from modelplane.privacy.vertical.cli import main

if __name__ == "__main__":
    main("guest")
