"""The S3 event archive: its segment format, the archiver that writes it, and its process."""
