"""Dagster definitions for Shopstream: `dagster_repo.definitions:defs`."""

import warnings

import dagster as dg

# Observed source assets are beta and partitioned asset checks a preview in Dagster 1.13; this
# graph relies on both on purpose, so their warnings at every load (of the code location, a bench or
# a test importing one module) are noise.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
