"""The genotype now lives beside the space that defines it: :mod:`nas_reid.space.genotype`.

This module re-exports it so that ``from nas_reid.genotype import Genotype`` (notebooks, user
scripts written before the move) keeps working; new code imports :mod:`nas_reid.space.genotype`.
"""

from nas_reid.space.genotype import *  # noqa: F401,F403
