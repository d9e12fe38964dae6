"""pf.models: the architectures medical imaging relies on, assembled from pf.nn layers.

- ``resnet18/34/50``, ``densenet121/169``: torchvision's architectures exactly (keys,
  shapes, parameter counts, initialisation); ``small_input=True`` for 32x32 images,
  ``in_channels`` for grey-scale scans. Classification.
- ``UNet``: segmentation.
- ``Autoencoder`` (dense), ``ConvAutoencoder`` (optionally denoising) and
  ``anomaly_scores``: anomaly detection by reconstruction error.
- ``DCGAN``: synthetic images (train with ``pf.train.fit_gan``).
- ``from_torch_state_dict``: PyTorch (torchvision) weights into these models.
"""

from .autoencoder import Autoencoder, ConvAutoencoder, anomaly_scores
from .convert import from_torch_state_dict, torch_state_dict_to_numpy
from .dcgan import DCGAN, Discriminator, Generator
from .densenet import DenseNet, densenet121, densenet169
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from .unet import UNet

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50",
           "DenseNet", "densenet121", "densenet169", "UNet", "Autoencoder", "ConvAutoencoder",
           "anomaly_scores", "DCGAN", "Generator", "Discriminator", "from_torch_state_dict",
           "torch_state_dict_to_numpy"]
