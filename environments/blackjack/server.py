"""Blackjack: a multi-turn game driven step by step; each task's seed fixes the deal.

Reward: win 1, push 0.5, loss or bust 0; a malformed action ends the game with 0 and a reason.
"""

import random

from gym_ray import ResourceServer, StepResult, extract_tag

RANKS = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
SUITS = ("♠", "♥", "♦", "♣")
ASK = "Reply with <action>hit</action> or <action>stand</action>."


def shuffled_deck(seed: int) -> list[str]:
    deck = [r + s for s in SUITS for r in RANKS]
    random.Random(seed).shuffle(deck)
    return deck


def total(hand: list[str]) -> int:
    """Best blackjack total: aces count 11 unless that busts."""
    values = [11 if c[:-1] == "A" else 10 if c[:-1] in ("J", "Q", "K") else int(c[:-1]) for c in hand]
    best = sum(values)
    for _ in range(values.count(11)):
        if best > 21:
            best -= 10
    return best


def show(hand: list[str]) -> str:
    return f"{' '.join(hand)} ({total(hand)})"


class Blackjack(ResourceServer):
    verifier = "win 1, push 0.5, loss 0 (step rewards)"
    origin = "native"

    def __init__(self, dealer_stands_on: int = 17) -> None:
        self.dealer_stands_on = dealer_stands_on

    def reset(self, task):
        deck = shuffled_deck(int(task.verifier_metadata["seed"]))
        self.state = {"deck": deck[4:], "player": deck[0:2], "dealer": deck[2:4]}
        return f"Your hand: {show(self.state['player'])}. Dealer shows: {self.state['dealer'][0]}. {ASK}"

    def step(self, action):
        move = (extract_tag(action, "action") or "").lower()
        player, dealer, deck = self.state["player"], self.state["dealer"], self.state["deck"]
        if move == "hit":
            player.append(deck.pop(0))
            if total(player) > 21:
                return StepResult(
                    observation=f"Your hand: {show(player)}. Bust, you lose.", reward=0.0, done=True
                )
            return StepResult(observation=f"Your hand: {show(player)}. Dealer shows: {dealer[0]}. {ASK}")
        if move != "stand":
            reason = (
                f"malformed action {action[-80:]!r}: expected <action>hit</action> or <action>stand</action>"
            )
            return StepResult(
                observation=f"Invalid action; game over. {ASK}", done=True, info={"reason": reason}
            )
        while total(dealer) < self.dealer_stands_on:
            dealer.append(deck.pop(0))
        me, them = total(player), total(dealer)
        outcome, reward = (
            ("win", 1.0) if them > 21 or me > them else ("push", 0.5) if me == them else ("lose", 0.0)
        )
        text = f"Your hand: {show(player)}. Dealer's hand: {show(dealer)}. You {outcome}."
        return StepResult(observation=text, reward=reward, done=True, info={"outcome": outcome})
