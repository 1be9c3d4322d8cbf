"""Objectives: a goal planned into a task graph, executed by worker agents and reviewed by a strategist."""
