"""Counter: per-episode state seeded from the task; the final count must match the task."""

from gym_ray import ResourceServer, VerifyResult, tool


class Counter(ResourceServer):
    verifier = "the session's final count"
    origin = "NeMo Gym's `example_session_state_mgmt`"
    metric = "accuracy"

    def seed(self, task):
        return {"count": int(task.verifier_metadata.get("initial_count", 0)), "calls": 0}

    @tool
    def increment(self, count: int = 1) -> str:
        """Add to the counter.

        Args:
            count: How much to add (negative to subtract).
        """
        self.state["count"] += count
        self.state["calls"] += 1
        return f"The counter is now {self.state['count']}."

    @tool
    def get_value(self) -> int:
        """Read the counter's current value."""
        return self.state["count"]

    def verify(self, task, messages):
        count, expected = self.state["count"], int(task.verifier_metadata["expected_count"])
        if self.state["calls"] == 0:
            return VerifyResult(reward=0.0, info={"reason": "increment was never called", "count": count})
        info = {"count": count, "expected": expected}
        if count != expected:
            info["reason"] = f"final count {count}, expected {expected}"
        return VerifyResult(reward=float(count == expected), info=info)
