"""`TextGenEnv`: text generation as a Gymnasium environment, one token per step.

    observation: the token ids so far ([CLS] prompt [SEP] completion...), padded to max_length
    action:      the next token id
    reward:      0 until the episode ends, then reward_fn(prompt, completion, reference)
    end:         the action is [SEP] (terminated) or the sequence reaches max_length (truncated)

It is the readable view of the MDP behind RL fine-tuning; training uses the batched rollout of
`tf_impl.ppo`, which produces the same tokens for the same noise (see the tests).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from shared.data import encode_prompt


class TextGenEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, dataset, tokenizer, max_length, reward_fn, render_mode=None):
        """dataset: prompt records ({"prompt", "reference"?, "task"?}); max_length: longest sequence."""
        super().__init__()
        self.dataset, self.tokenizer, self.max_length, self.reward_fn = dataset, tokenizer, max_length, reward_fn
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, tokenizer.vocab_size - 1, shape=(max_length,), dtype=np.int64)
        self.action_space = gym.spaces.Discrete(tokenizer.vocab_size)
        self.record, self.ids, self.prompt_length = None, [], 0

    def _observation(self):
        obs = np.full(self.max_length, self.tokenizer.pad_id, dtype=np.int64)
        obs[:len(self.ids)] = self.ids
        return obs

    def reset(self, *, seed=None, options=None):
        """Start an episode on a random prompt (or on options["index"])."""
        super().reset(seed=seed)
        index = (options or {}).get("index")
        if index is None:
            index = int(self.np_random.integers(len(self.dataset)))
        self.record = self.dataset[index]
        self.ids, _ = encode_prompt(self.tokenizer, self.record["prompt"], self.max_length - 1)
        self.prompt_length = len(self.ids)
        return self._observation(), {"index": index, "length": len(self.ids)}

    def step(self, action):
        action = int(action)
        self.ids.append(action)
        terminated = action == self.tokenizer.sep_id
        truncated = not terminated and len(self.ids) >= self.max_length
        reward = 0.0
        if terminated or truncated:
            reward = float(self.reward_fn(self.record["prompt"], self.completion(),
                                          self.record.get("reference")))
        return self._observation(), reward, terminated, truncated, {"length": len(self.ids)}

    def completion(self) -> str:
        return self.tokenizer.decode(self.ids[self.prompt_length:])

    def render(self):
        return f"{self.record['prompt']!r} -> {self.completion()!r}"
