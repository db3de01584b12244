"""Entry points Flower loads from the app bundle; the implementation is in modelplane."""

from modelplane.privacy.horizontal.clientapp import app as client_app
from modelplane.privacy.horizontal.serverapp import app as server_app

__all__ = ["client_app", "server_app"]
