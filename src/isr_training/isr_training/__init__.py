"""ISR task, vectorized environments, learners and the staged training pipeline."""
