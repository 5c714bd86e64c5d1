"""The HTTP API (Flask): app factory, blueprints, request and answer models."""
