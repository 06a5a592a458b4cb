"""Distribution guidance: targets, distribution losses, and the guided h update.

Nothing here knows about UNets: functions take h, an attribute predictor and targets.
"""
