"""The scenario stage: what a scenario file may say (targets, studies, users, load shape, faults, run settings).

Plain pydantic models and their rules, read by every stage above: `targets` starts what
[target] describes, `load` drives what [load] and [users] describe, `runs` ties them together.
"""
