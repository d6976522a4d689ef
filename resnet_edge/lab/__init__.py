"""The residual-learning lab: three claims about residual networks, each turned into a measurement.

- ``narrow``: networks no wider than their input cannot enclose a bounded region; residual ones can
  (pure numpy, no torch: the desktop app can call :func:`resnet_edge.lab.narrow.run_narrow`).
- ``degradation``: plain-56 trains worse than plain-20, resnet-56 better than resnet-20 (needs torch).
- ``gradients``: d(loss)/d(x_l) keeps its size across residual blocks, not across plain ones (needs torch).

Importing this package imports no torch; each experiment module imports what it needs.
"""
