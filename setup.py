"""Builds the compiled kernels; everything else is in pyproject.toml."""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "fastlstm._kernels",
        ["fastlstm/_kernels.pyx"],
        include_dirs=[np.get_include(), "fastlstm"],
        depends=["fastlstm/_gates.h", "fastlstm/_recurrent.h", "fastlstm/_pool.h"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # -O3 for the vectoriser; no -march=native and no -ffast-math: the gate
        # loops pick their instruction set at load time (see _gates.h).
        extra_compile_args=["-O3"],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}))
