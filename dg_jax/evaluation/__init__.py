"""Evaluation of generated data sets: fairness (FD, KL, deviation ratio) and quality (KID, FID)."""
