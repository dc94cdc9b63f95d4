"""The tasks the mini model performs over embeddings: classify, moderate, summarize, anomaly, route."""
