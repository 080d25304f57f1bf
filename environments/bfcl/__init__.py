"""bfcl: BFCL v4 (Berkeley Function Calling Leaderboard), graded by BFCL's own checkers. (`server: bfcl`)."""
