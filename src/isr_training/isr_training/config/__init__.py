"""Package data: ``training_config.yaml`` and ``dynamics_config.yaml`` of the training pipeline."""
