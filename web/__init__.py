"""The moviEharmony website: server-rendered pages that use nothing but the HTTP API."""
