"""Training data: the windows, augmentation and conditioning live in the runtime's pure core."""

from drummachine.corpus.windows import STEPS, Augment, Windows, fit_conditioning

__all__ = ["STEPS", "Augment", "Windows", "fit_conditioning"]
