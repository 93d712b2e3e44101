"""Statistics on the verdict projection: windows, the leakage model, significance, changes, biases.

Pure code: functions of arrays, lists and a :class:`~prefleak.lineage.Lineage`; no I/O, no globals.
"""
