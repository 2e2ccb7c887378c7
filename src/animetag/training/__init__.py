"""Stage 3, training: fit and resume, fine-tuning from a parent run, the input pipeline and
the devices (the backend's specifics live here). Imports the foundation, `data` and `model`."""
