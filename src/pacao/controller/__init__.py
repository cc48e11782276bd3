"""The PACAO controller: monitoring, optimization/decision and action modules as one service.

:mod:`pacao.decision` is the decision code, pure and clock-injected, shared with
the simulator; this package is the service around it (docs/controller.md).
"""
