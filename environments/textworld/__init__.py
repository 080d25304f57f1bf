"""textworld: TextWorld's generated games (cooking, coin collector, treasure hunter, simple), played in the z-machine and scored by the game. (`server: textworld`)."""
