"""ifeval: IFEval's 541 prompts graded by its own per-instruction checkers, strict and loose. (`server: ifeval`)."""
