"""TensorFlow/Keras side: the same model family, weight conversion, the env and the PPO trainer."""
