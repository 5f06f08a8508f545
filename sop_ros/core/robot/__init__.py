"""Robot-side logic the nodes wrap: backend contract and tasks, policy runner, action mux, teleop,
scripted operator, monitor state, arm commands."""
