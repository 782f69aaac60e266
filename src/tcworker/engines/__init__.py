"""Engines run a task's commands in a sandbox: :mod:`.base` (the interface), :mod:`.native`.

Import concrete engines from their modules (or through :mod:`.registry`), so that a worker never
imports an engine it does not use.
"""
