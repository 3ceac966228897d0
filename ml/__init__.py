"""Model training and scoring (Spark ALS). Built so far (issue 4, first slice): a local Spark
session (:mod:`ml.spark`), the rating model — bias baseline + ALS on its residuals blended with
an item kNN (:mod:`ml.training`, :mod:`ml.knn`) — and offline evaluation on MovieLens folds
(:mod:`ml.evaluation`, ``harmony evaluate``). Archive replay, the model registry, publishing
factors and pair scoring are not built yet."""
