"""deepshield.disrupt: adversarial disruption of image-translation generators (Ruiz et al. 2020).

`disrupt(G, x, c)` perturbs x (in G's range, [-1, 1]) within an L-inf eps so that G(x_adv, c)
is far from G(x, c) (or close to a target); `distortion` measures the result per image. Tables of
the paper, GAN adversarial training and generator runs: see tables, generators, experiment.
"""

from deepshield.disrupt.attack import METHODS, TRANSFERS, disrupt, from_pixels, to_pixels
from deepshield.disrupt.distortion import distortion, mean_distortion
from deepshield.disrupt.evaluate import disrupt_images
from deepshield.disrupt.experiment import run_experiment
from deepshield.disrupt.generators import disruption_perturb, load_generator, train_generator
from deepshield.disrupt.views import PARTS

__all__ = [
    "METHODS",
    "PARTS",
    "TRANSFERS",
    "disrupt",
    "disrupt_images",
    "disruption_perturb",
    "distortion",
    "from_pixels",
    "load_generator",
    "mean_distortion",
    "run_experiment",
    "to_pixels",
    "train_generator",
]
