"""The R1 recipe composed from stages: base -> R1-Zero; cold-start SFT -> reasoning RL ->
rejection sampling + SFT -> all-scenario RL; and the dense student, distilled vs RL alone."""
