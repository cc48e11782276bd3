"""`pacao reproduce`: the pipeline that runs the simulator (and the testbed) and writes
the run folder and its report; nothing in pacao.sim, pacao.testbed or pacao.report
imports it."""
