"""Commands: validate a request, turn it into events and append them to the log."""
