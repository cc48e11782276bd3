"""The PACAO controller: monitoring, optimization/decision and action modules as one service.

:mod:`pacao.controller.policy` is the decision code, pure and clock-injected,
shared with the simulator; the rest is the service around it (docs/controller.md).
"""
