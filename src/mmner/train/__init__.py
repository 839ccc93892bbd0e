"""Training: Lightning module and data module, optimiser and schedule, run directories."""
