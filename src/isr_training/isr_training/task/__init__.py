"""The ISR task shared by training and evaluation: config, safety filter, rewards, coverage."""
