"""dialogue: A booking dialogue with a simulated user, scored on the booking's fields. (`server: dialogue`)."""
