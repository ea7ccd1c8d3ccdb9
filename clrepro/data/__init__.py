"""Data: the datasets as in-memory tensors (MNIST, Fashion-MNIST, CIFAR-10; checksummed) and the
continual-learning streams built from them (Permuted / Rotated / Split, the three scenarios)."""
