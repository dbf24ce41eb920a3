"""Small single-purpose helpers used by the user API and the engine."""
