"""reverse_words: a small Gymnasium text environment (`gym_ray/ReverseWords-v0`) run through gym_ray's
Gymnasium adapter (`gym_ray.integrations.gymnasium:GymnasiumEnv`).

Each step shows a word; the action is that word reversed. A right answer earns 1/num_words, a wrong one 0
(the episode goes on), so per-step rewards sum to 1.0 only for a perfect episode. The words follow the
reset seed. Importing this module registers the id; `gymnasium.make("<this module>:gym_ray/ReverseWords-v0")`
does the import.
"""

from __future__ import annotations

import string

import gymnasium
from gymnasium import spaces

WORDS = ("apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "chair", "ocean", "plant",
         "train", "glass", "honey", "storm", "bread", "light")
ENV_ID = "gym_ray/ReverseWords-v0"


class ReverseWords(gymnasium.Env):
    metadata = {"render_modes": []}

    def __init__(self, num_words: int = 3) -> None:
        self.num_words = num_words
        self.observation_space = spaces.Text(max_length=400, charset=string.printable)
        self.action_space = spaces.Text(max_length=400, min_length=0, charset=string.printable)
        self.words: list[str] = []
        self.index = 0

    def _prompt(self) -> str:
        return f"Word {self.index + 1} of {self.num_words}: reverse '{self.words[self.index]}'."

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.words = [WORDS[int(i)] for i in self.np_random.choice(len(WORDS), self.num_words, replace=False)]
        self.index = 0
        return ("Reverse each word I show you; reply with the reversed word only. " + self._prompt(),
                {"words": list(self.words)})

    def step(self, action: str):
        word = self.words[self.index]
        right = action.strip().strip("'\"").lower() == word[::-1]
        self.index += 1
        done = self.index == self.num_words
        verdict = "Correct." if right else f"Wrong: it was '{word[::-1]}'."
        observation = verdict if done else f"{verdict} {self._prompt()}"
        return observation, (1.0 / self.num_words if right else 0.0), done, False, {"correct": right}


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:ReverseWords")
