"""textworld_express: TextWorldExpress games in its Java simulator, scored by the game. (`server: textworld_express`)."""
