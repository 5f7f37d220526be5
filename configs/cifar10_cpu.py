"""CIFAR-10 on a 2-core CPU: the paper's recipe at a size that trains in about 40 minutes.

Reads CIFAR-10 from TFDS (prepare it once with `tfds build cifar10`, or pass --download, on a
machine with a network; --data_dir points at it elsewhere); 10% of its train split (5,000
images, fixed by split_seed) is held out as the validation split the kNN monitor and the probes
score on. The same images as an image folder (train/<class>/*.jpg) work too, with the same
holdout rules: --dataset=folder:PATH.

python train.py --config=cifar10_cpu --download
python train.py --config=cifar10_cpu:ablation
python train.py --config=cifar10_cpu:smoke
python train.py --config=cifar10_cpu --dataset=folder:/data/cifar10/train

The main run pretrains on the 45,000 training images for 30 epochs; `ablation` on a fixed 10,000
of them for 8 epochs; `smoke` is a one-epoch check of the whole pipeline. kl_decay_epochs follows
--epochs (half of it). Measured figures, and what differs from the paper (configs/cifar10.py) and
why, are in docs/results.md.
"""

from carl_tf.configs.common import paper_recipe


def get_config(arg: str | None = None):
    c = paper_recipe()
    c.dataset = "cifar10"  # TFDS; or --dataset=folder:PATH of the train split's JPEGs
    c.holdout = 0.1  # of the train split: 45,000 train / 5,000 validation, fixed by split_seed
    c.image_size = 32
    c.backbone, c.backbone_width = "resnet18", 16  # 1/16 of the FLOPs of the paper's width 64
    c.num_prototypes = 100  # about ten times the classes (Fig. 3)

    # Tuned on the 10k ablation size, chosen by kNN on the validation split (docs/results.md).
    c.batch_size = 128  # twice the steps of 256 per epoch at about the same images/s on CPU
    c.learning_rate = 0.12  # at batch 256, so 0.06 at batch 128; 0.03 and 0.06 gave less, 0.24
    # collapsed onto one prototype by epoch 3
    c.weight_decay = 5e-4  # coupled (PyTorch's SGD, the recipe's meaning; configs/common.py):
    # 36.31 +- 0.35 kNN at the ablation size against 34.89 +- 1.12 decoupled, higher in every
    # seed though inside the noise rule (docs/results.md section 8); the 30-epoch figures of
    # docs/results.md section 3 were measured with the decoupled form.
    c.crop_min_scale = 0.2  # 0.08 (SimCLR's) learned more slowly in 8-epoch runs
    c.projection_hidden_dim = 512  # 2048 costs ~13% more per step and learned more slowly
    c.warmup_epochs = 0
    c.symmetric = False

    c.epochs = 30  # about a minute per epoch in bfloat16 on this 2-core CPU
    c.knn_every = 2
    if arg == "ablation":
        c.train_subset, c.epochs, c.knn_every = 10000, 8, 2
    elif arg == "smoke":
        c.train_subset, c.epochs, c.knn_every = 1024, 1, 1
    elif arg:
        raise ValueError(f"unknown argument {arg!r}; use ablation or smoke")
    # lambda 4 -> 1.5 as in App. B.2, decayed over the first half of the epochs (100 of 200
    # there); a reference, so --epochs moves it too (--kl_decay_epochs still sets it).
    c.kl_start, c.kl_end = 4.0, 1.5
    c.kl_decay_epochs = c.get_ref("epochs") // 2
    return c
