"""What a testbed run is made of: topology, scenario timelines, experiments, TCP host profiles.

Descriptions only: nothing here creates a namespace or starts a process.
"""
