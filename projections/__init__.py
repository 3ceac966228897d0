"""Read models: the Faust projector, the projection-store port and its adapters."""
