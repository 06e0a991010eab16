"""deepshield.disrupt: adversarial disruption of image-translation generators (Ruiz et al. 2020).

`disrupt(G, x, c)` perturbs x (in G's range, [-1, 1]) within an L-inf eps so that G(x_adv, c)
is far from G(x, c) (or close to a target); `distortion` measures the result per image. Tables of
the paper and GAN adversarial training: see tables, generators; the runs that write them are
in deepshield.runs (generators, disrupt_experiment, disrupt_evaluate).
"""

from deepshield.disrupt.attack import METHODS, TRANSFERS, disrupt, from_pixels, to_pixels
from deepshield.disrupt.distortion import distortion, mean_distortion
from deepshield.disrupt.generators import disruption_perturb
from deepshield.disrupt.views import PARTS

__all__ = [
    "METHODS",
    "PARTS",
    "TRANSFERS",
    "disrupt",
    "disruption_perturb",
    "distortion",
    "from_pixels",
    "mean_distortion",
    "to_pixels",
]
