"""ifeval: Instruction following with programmatic, IFEval-style checks. (`server: ifeval`)."""
