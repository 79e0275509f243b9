"""Stream processors: each module declares one Faust agent and carries out the effects of the pure core."""
