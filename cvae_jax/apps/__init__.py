"""What trained models are used for: sampling, evaluation, translation, anomaly scores, pictures."""
