"""What two or more streamfit services share: settings, messages, Kafka wiring, the feature
pipeline, the model bundle, the MLflow model store, and where the world changed (``change``: the
predictor's drift signal and the trainer's training window)."""
