"""textarena: TextArena's single-player games through gym_ray's TextArena adapter. (`server: textarena`)."""
