"""The trainer: retrains LightGBM with Bayesian hyper-parameter search when asked to, and
promotes the new model only if it beats the champion."""
