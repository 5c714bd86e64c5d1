"""`update_models_config.py`: inventory of model files, merge into the catalog, calibration from runs."""
