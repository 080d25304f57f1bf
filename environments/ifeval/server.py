"""ifeval: instruction following with programmatic checks (IFEval-style). Each task asks for a short text
under 1-3 verifiable instructions; each instruction's check is a component (1 followed, 0 not). The reward
is IFEval's strict prompt-level score (1 only when every instruction is followed), or with
`partial_credit: true` the fraction followed (instruction-level)."""

from __future__ import annotations

from gym_ray_env_ifeval.checks import INSTRUCTIONS, follows

from gym_ray import ResourceServer, VerifyResult


class IFEval(ResourceServer):
    verifier = "IFEval-style instruction checks in code (strict prompt-level, or partial credit)"
    origin = "native (IFEval's instruction ids)"

    def __init__(self, partial_credit: bool = False) -> None:
        self.partial_credit = partial_credit

    def score(self, task, answer):
        instructions = task.verifier_metadata["instructions"]
        unknown = [i["id"] for i in instructions if i["id"] not in INSTRUCTIONS]
        if unknown:
            raise ValueError(f"task {task.task_id}: unknown instruction ids {unknown}")
        components = {i["id"]: float(follows(i["id"], i.get("kwargs") or {}, answer)) for i in instructions}
        followed = sum(components.values()) / len(components)
        reward = followed if self.partial_credit else float(followed == 1.0)
        missed = [k for k, v in components.items() if not v]
        return VerifyResult(reward=reward, components=components,
                            info={"instruction_level": followed, **({"missed": missed} if missed else {})})
