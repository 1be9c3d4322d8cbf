"""Declarative workflows: YAML graphs of agent tasks executed as child runs of a workflow run."""
