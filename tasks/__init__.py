"""What a task is: what a label looks like, how it is checked, how predictions are scored.

Classification and detection are two tasks behind one interface. This package holds
detection's parts so far: box labels checked against the image they belong to
(:mod:`.boxes`) and mean average precision through torchmetrics (:mod:`.metrics`).
"""
