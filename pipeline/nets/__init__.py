"""The networks, as plain nn.Modules over a leading member dimension: the normalization layers
(norms, registered against pipeline.spec.variants), the stacked MLP (mlp) and CNN (cnn),
build_model choosing one (build), the stacked optimizers (optim) and the bias drift's closed
form per optimizer (drift)."""
