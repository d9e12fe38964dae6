"""pf.nn: modules (layers with parameters and state), functional operations and
initialisation, with torch.nn's names, arguments, defaults and state-dict layout."""

from . import functional, init
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d
from .conv import Conv2d, ConvTranspose2d
from .container import ModuleDict, ModuleList, Sequential
from .dropout import Dropout
from .linear import Flatten, Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, DiceLoss, MSELoss
from .module import Module
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .upsampling import Upsample

__all__ = ["functional", "init", "Module", "Parameter", "Sequential", "ModuleList",
           "ModuleDict", "Identity", "Linear", "Flatten", "ReLU", "LeakyReLU", "Sigmoid",
           "Tanh", "Dropout", "BatchNorm1d", "BatchNorm2d", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "Upsample", "Conv2d", "ConvTranspose2d", "CrossEntropyLoss",
           "BCEWithLogitsLoss", "MSELoss", "DiceLoss"]
