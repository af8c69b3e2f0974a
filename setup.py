"""Builds the compiled kernels; everything else is in pyproject.toml."""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def kernel_extension(name):
    return Extension(
        f"fastlstm.{name}",
        [f"fastlstm/{name}.pyx"],
        include_dirs=[np.get_include(), "fastlstm"],
        depends=["fastlstm/_gates.h", "fastlstm/_recurrent.h", "fastlstm/_pool.h"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # -O3 for the vectoriser; no -march=native and no -ffast-math: the gate
        # loops pick their instruction set at load time (see _gates.h). -g0: no
        # debug sections (Python's own CFLAGS ask for -g), 8 MB less in a wheel;
        # the symbols stay, for profilers.
        extra_compile_args=["-O3", "-g0"],
    )


# _kernels: the LSTM layer; _cells: the plain RNN and GRU layers
extensions = [kernel_extension("_kernels"), kernel_extension("_cells")]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}))
