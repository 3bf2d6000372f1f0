"""The MNIST application built on the library: data, training, reports, the command line,
the ablation study and the reference notebooks. The library never imports from here."""
