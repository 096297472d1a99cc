"""The predictor: answers feature requests in micro-batches and hot-swaps models."""
