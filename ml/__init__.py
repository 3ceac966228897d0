"""The rating model: archive replay into Spark (:mod:`ml.replay`), training — a bias baseline,
Spark ALS on its residuals and a kNN blend (:mod:`ml.training`, :mod:`ml.knn`) — reduced to
published biases and factors (:mod:`ml.factors`), the model registry (:mod:`ml.registry`), the
``harmony train`` job (:mod:`ml.retrain`) and offline evaluation (:mod:`ml.evaluation`).
Pair scoring (``/v1/match``) and fold-in are not built yet."""
