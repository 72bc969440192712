"""Package discovery only; everything else is in pyproject.toml. Every package folder under fastgrok/ is
found (a new one cannot be left out of the wheel), and the top-level kernels/ folder installs as
fastgrok.kernels (pyproject's package-dir), which [tool.setuptools.packages.find] cannot express."""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["fastgrok", "fastgrok.*"]), "fastgrok.kernels"])
