"""The Keras optimizer of the TensorFlow trainers (PPO and the reward model), built in one place."""

from __future__ import annotations

import keras
import numpy as np

from shared.constants import ADAM_BETAS, ADAM_EPS


def adam(learning_rate: float, epsilon: float = ADAM_EPS) -> keras.optimizers.Adam:
    """Adam with the betas and epsilon passed as float64 numbers: Keras casts a Python float
    through float32 (0.9 -> 0.8999999762), which a float64 model would see; float32 runs are
    unchanged. Keras adds epsilon to sqrt(v) ("epsilon hat"), not to sqrt(v_hat) as torch does."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=np.float64(ADAM_BETAS[0]),
                                 beta_2=np.float64(ADAM_BETAS[1]), epsilon=np.float64(epsilon))
