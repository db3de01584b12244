"""Controllers: read desired state from the store, act, write observed state back. Restartable and
idempotent; they hold no state the store does not."""
