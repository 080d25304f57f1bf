"""agentdojo: AgentDojo's suites, graded by each task's own utility and security checks. (`server: agentdojo`)."""
