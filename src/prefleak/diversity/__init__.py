"""Diversity of synthetic data, drift across windows and generations, and coverage of eval sets.

Pure cores (:mod:`.text`, :mod:`.lexical`, :mod:`.semantic`, :mod:`.resample`, :mod:`.coverage`,
:mod:`.artifacts`) take plain values; :mod:`.report` assembles them over the bounded samples the
store keeps (:mod:`.sample`). See docs/diversity.md.
"""
