"""weather: One tool call; the answer must use what the tool returned. (`server: weather`)."""
