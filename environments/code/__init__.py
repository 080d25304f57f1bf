"""code: Python code generation judged in the bubblewrap sandbox. (`server: code`)."""
