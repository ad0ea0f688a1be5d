"""Calibrated uncertainty: conformal prediction intervals for ensembles.

* :mod:`~matxfer.uncertainty.conformal`: split-conformal quantiles and intervals
  (the arithmetic, no models);
* :mod:`~matxfer.uncertainty.calset`: which labelled records may calibrate an
  ensemble (none that a member trained on);
* :mod:`~matxfer.uncertainty.diagnostics`: coverage, interval width, miscalibration
  area, binned error vs spread; :mod:`~matxfer.uncertainty.plots` draws them;
* :mod:`~matxfer.uncertainty.intervals`: ``matxfer predict|evaluate ... --interval 0.9``.
"""
