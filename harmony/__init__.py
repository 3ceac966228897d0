"""The application shell: settings, logging, the local-stack launcher and the `harmony` CLI."""
