"""Reading scans, dataset folders, intensity normalisation, the preprocessing cache and synthetic data."""
