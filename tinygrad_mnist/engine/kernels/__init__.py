"""Kernels: the engine's array code chosen for speed, as plain functions of NumPy arrays that
never import an op or a Tensor. Each layout, strategy and measured threshold lives here, and
each has a plain reference that tests/test_kernels.py checks it against.

    blas.py          matrix products with the BLAS thread count chosen per product
    windows.py       a convolution's or pooling's geometry, padded and strided windows
    convolution.py   im2col, the product, the input gradient's three strategies, and the
                     measured choice of algorithm per layer shape
    conv_algorithms.py  the forward's other algorithms: Winograd F(2x2, 3x3), shifted views
    pooling.py       max and average pooling and their scatters
    batchnorm.py     the layouts batch norm's formula runs on
    special.py       the normal CDF and density for GELU (NumPy has no erf)
"""
