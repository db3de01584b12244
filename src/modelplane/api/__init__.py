"""The HTTP API (FastAPI): desired state in, observed state out. It never calls a controller."""
