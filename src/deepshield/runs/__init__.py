"""The run layer: workflows above the algorithm packages that read and write a run folder
(a run's decision: calibrator + operating threshold; scanning media files with a run's detector).
"""
