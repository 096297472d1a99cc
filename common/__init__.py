"""What two or more streamfit services share: settings, messages, Kafka wiring, the feature
pipeline, the model bundle and the MLflow model store."""
