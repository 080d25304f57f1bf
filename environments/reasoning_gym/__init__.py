"""reasoning_gym: reasoning-gym datasets, scored by each dataset's own score_answer. (`server: reasoning_gym`)."""
