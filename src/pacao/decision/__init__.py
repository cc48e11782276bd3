"""The decision policy, shared by the controller and the simulator."""
