"""ifbench: IFBench's out-of-distribution instruction-following prompts graded by its own per-instruction checkers, strict and loose. (`server: ifbench`)."""
