"""Model training and scoring (Spark ALS over the S3 archive). Not built yet: see issue 4."""
