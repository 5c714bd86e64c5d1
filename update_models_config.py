#!/usr/bin/env python3
"""Refresh models_config.json from the model files and the router's logs (see docs/adding-models.md)."""

import sys

from router.catalog.update.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
