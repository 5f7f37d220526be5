"""The offline default: scikit-learn's bundled 8x8 digits upscaled to 32 px, minutes on 2 CPUs.

    python train.py            # same as --dataset=digits

A narrow ResNet-18 on 1,437 training digits (20% held out for the kNN monitor); the learning rate
is higher than the paper's because the set and the batch are tiny and the run is short.
"""

from carl_tf.configs.common import paper_recipe


def get_config(arg: str | None = None):
    c = paper_recipe()
    c.dataset = "digits"
    c.holdout = 0.2
    c.image_size = 32
    c.backbone_width = 16
    c.projection_hidden_dim = 512
    c.num_prototypes = 100
    c.epochs = 15
    c.batch_size = 128
    c.learning_rate = 0.1
    # lambda 4 -> 1.5 over two thirds of the epochs (10 of 15); follows --epochs.
    c.kl_start, c.kl_end = 4.0, 1.5
    c.kl_decay_epochs = c.get_ref("epochs") * 2 // 3
    c.crop_min_scale = 0.3  # 8x8 digits carry too little to survive an 8% crop
    c.knn_every = 5
    if arg == "smoke":
        c.epochs, c.backbone_width, c.projection_hidden_dim, c.knn_every = 2, 4, 64, 1
        c.batch_size = 64
    elif arg:
        raise ValueError(f"unknown preset argument {arg!r}; use smoke or none")
    return c
