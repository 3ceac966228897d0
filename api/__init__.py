"""The HTTP API: command endpoints append events; query endpoints read projections only."""
