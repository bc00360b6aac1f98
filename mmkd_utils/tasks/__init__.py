"""Layer 3: what a model is used for: evaluation, embeddings, retrieval, probes, comparison."""
