"""The processes a testbed spawns (delay line, xTR data planes and agents, VM daemon,
traffic tools) and the control-socket protocol they share."""
