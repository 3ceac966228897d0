"""The rating model: archive replay into Spark (:mod:`ml.replay`), training — a bias baseline,
Spark ALS on its residuals and a kNN blend (:mod:`ml.training`, :mod:`ml.knn`) — reduced to
published biases and factors (:mod:`ml.factors`), the model registry (:mod:`ml.registry`), the
``harmony train`` job (:mod:`ml.retrain`), offline evaluation (:mod:`ml.evaluation`), and group
scoring with fold-in of users newer than the model (:mod:`ml.matching`, ``GET /v1/match``)."""
