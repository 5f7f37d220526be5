"""STL-10 pretraining preset: unlabelled + train splits at 96 px with blur, lambda 2 -> 1 (B.1).

python train.py --dataset=stl10

Weight decay is coupled, as in the PyTorch SGD of the MoCo recipe the paper follows (L2 added to
the gradient before momentum, every parameter decayed; configs/common.py).
"""

from carl_tf.configs.common import paper_recipe


def get_config(arg: str | None = None):
    c = paper_recipe()
    c.dataset = "stl10"
    c.train_split = "unlabelled+train"
    c.image_size = 96  # standard ResNet stem from 96 px (carl_tf.backbones)
    c.blur_probability = 0.5
    c.num_prototypes = 100  # ten times STL-10's classes, as for CIFAR-10
    c.kl_start, c.kl_end = 2.0, 1.0  # decayed over half the epochs (common.py)
    if arg == "smoke":
        c.epochs, c.backbone_width, c.knn_every, c.train_subset = 2, 8, 1, 1024
    elif arg:
        raise ValueError(f"unknown preset argument {arg!r}; use smoke or none")
    return c
