"""Run machinery: the config's checks, the run directory, export, strategy, precision, callbacks."""
